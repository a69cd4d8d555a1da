"""The checks behind the detectors: Luhn for cards, the IBAN registry's lengths and mod-97,
IPv6 parsing, and what a phone number's digits look like."""

from __future__ import annotations

import pytest

from ai_service.policy.detectors import (
    BUILTIN,
    MAX_ENTITY_CHARS,
    iban_valid,
    ip_valid,
    luhn_valid,
    phone_valid,
)

#: One example IBAN of every country in the SWIFT IBAN registry, as the registry gives it.
REGISTRY_EXAMPLES = [
    "NO9386011117947",
    "BE68539007547034",
    "DK5000400440116243",
    "FI2112345600000785",
    "NL91ABNA0417164300",
    "FO6264600001631634",
    "GL8964710001000206",
    "MK07250120000058984",
    "SI56263300012039086",
    "AT611904300234573201",
    "EE382200221020145685",
    "LT121000011101001000",
    "LU280019400644750000",
    "BA391290079401028494",
    "KZ86125KZT5004100100",
    "XK051212012345678906",
    "CH9300762011623852957",
    "HR1210010051863000160",
    "LI21088100002324013AA",
    "LV80BANK0000435195001",
    "DE89370400440532013000",
    "GB29NWBK60161331926819",
    "IE29AIBK93115212345678",
    "BG80BNBG96611020345678",
    "BH67BMAG00001299123456",
    "CR05015202001026284066",
    "GE29NB0000000101904917",
    "ME25505000012345678951",
    "RS35260005601001611379",
    "VA59001123000012345678",
    "AE070331234567890123456",
    "GI75NWBK000000007099453",
    "IL620108000000099999999",
    "TL380080012345678910157",
    "IQ98NBIQ850123456789012",
    "ES9121000418450200051332",
    "CZ6508000000192000145399",
    "RO49AAAA1B31007593840000",
    "SA0380000000608010167519",
    "SE4550000000058398257466",
    "SK3112000000198742637541",
    "TN5910006035183598478831",
    "VG96VPVG0000012345678901",
    "AD1200012030200359100100",
    "MD24AG000225100013104168",
    "PK36SCBL0000001123456702",
    "PT50000201231234567890154",
    "ST68000100010051845310112",
    "IS140159260076545510730339",
    "TR330006100519786457841326",
    "FR1420041010050500013M02606",
    "IT60X0542811101000000123456",
    "GR1601101250000000012300695",
    "MC5811222000010123456789030",
    "SM86U0322509800000000270100",
    "MR1300020001010000123456753",
    "PL61109010140000071219812874",
    "HU42117730161111101800000000",
    "CY17002001280000001200527600",
    "AL47212110090000000235698741",
    "AZ21NABZ00000000137010001944",
    "BY13NBRB3600900000002Z00AB00",
    "DO28BAGR00000001212453611324",
    "GT82TRAJ01020000001210029690",
    "LB62099900000001001901229114",
    "SV62CENR00000000000000700025",
    "BR1800360305000010009795493C1",
    "EG380019000500000000263180002",
    "PS92PALS000000000400123456702",
    "QA58DOHB00001234567890ABCDEFG",
    "UA213223130000026007233566001",
    "JO94CBJO0010000000000131000302",
    "KW81CBKU0000000000001234560101",
    "MU17BOMM0101101030300200000MUR",
    "MT84MALT011000012345MTLCAST001S",
    "SC18SSCB11010000000000001497USD",
    "LC55HEMM000100010012001200023015",
]


@pytest.mark.parametrize("iban", REGISTRY_EXAMPLES)
def test_every_country_s_registry_example_is_an_iban(iban: str) -> None:
    assert iban_valid(iban)
    spaced = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    assert iban_valid(spaced) and iban_valid(iban.lower())


@pytest.mark.parametrize(
    "text",
    [
        "DE89370400440532013001",  # one digit off: mod-97 fails
        "DE8937040044053201300",  # a German IBAN is 22 characters
        "DE893704004405320130000",
        "XX89370400440532013000",  # no such country
        "GB29NWBK6016133192681",
        "GB81WEST12345698765432",  # check digits one below GB82...: mod-97 gives 0, not 1
    ],
)
def test_what_only_looks_like_an_iban_is_not_one(text: str) -> None:
    assert not iban_valid(text)


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("4111111111111111", True),
        ("4111 1111 1111 1111", True),
        ("4111-1111-1111-1112", False),
        ("5500000000000004", True),
        ("378282246310005", True),  # 15 digits
        ("4222222222222", True),  # 13 digits: the fewest a card has
        ("6011000990139424", True),
        ("4111111111111111110", True),  # 19 digits: the most
        ("79927398713", False),  # Luhn-valid, but 11 digits
        ("000000000000", False),  # 12 zeros pass Luhn: too few digits
        ("00000000000000000000", False),  # 20 zeros: too many
        ("1234567812345678", False),
    ],
)
def test_a_card_number_passes_luhn_with_13_to_19_digits(number: str, valid: bool) -> None:
    assert luhn_valid(number) is valid


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("192.168.0.1", True),  # IPv4 candidates are exact already
        ("2001:db8::1", True),
        ("::1", True),
        ("fe80::1ff:fe23:4567:890a", True),
        ("12:30:45", False),  # a time
        ("aa:bb:cc", False),
        (":::", False),
    ],
)
def test_an_ipv6_looking_candidate_must_parse(text: str, valid: bool) -> None:
    assert ip_valid(text) is valid


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("555-1234", True),  # 7 digits
        ("555-123", False),  # 6
        ("+1 555 123 4567", True),
        ("+123456789012345", True),  # 15 digits
        ("+1234567890123456", False),  # 16
        ("2024-01-31", False),  # a date
        ("000-45-6789", False),  # shaped like an SSN
        ("555-12-34567", True),
    ],
)
def test_a_phone_number_has_7_to_15_digits_and_is_no_date_or_ssn(text: str, valid: bool) -> None:
    assert phone_valid(text) is valid


def test_each_detector_names_its_kind_and_bounds_its_matches() -> None:
    kinds = {name: (detector.kind, detector.longest) for name, detector in BUILTIN.items()}
    assert kinds == {
        "secret": ("SECRET", 211),
        "email": ("EMAIL", 448),
        "iban": ("IBAN", 43),
        "credit_card": ("CREDIT_CARD", 37),
        "ssn": ("US_SSN", 11),
        "ip": ("IP_ADDRESS", 39),
        "phone": ("PHONE", 36),
    }
    assert MAX_ENTITY_CHARS == 1024
