"""What counts as personal or secret data: one `Detector` per kind, patterns plus checks.

A pattern finds candidates; a check (Luhn for cards, mod-97 and the country's length
for IBANs, the address parser for IPv6, digit counts for phones) drops the ones that
only look alike, so a 16-digit order number that fails Luhn is not a card. Every
pattern may start only at a token boundary, which keeps a scan linear in the text's
length, and every match is bounded (`longest`): a scan in slices, or of a stream,
knows how far back an entity can begin. A secret token may run on past its bound;
its `tail` takes the rest.

Patterns see text as `normalize.py` makes it: compatibility forms folded (NFKC per
character: fullwidth digits, non-breaking spaces, ligatures), zero-width and other
invisible characters and combining marks removed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

#: The longest match a pattern that sets no bound is looked for in (custom patterns):
#: in a long text or a stream, a match longer than this may be found cut short.
MAX_ENTITY_CHARS = 1024


@dataclass(frozen=True, slots=True)
class Detector:
    #: What a match is replaced with: `[REDACTED:<kind>]`.
    kind: str
    pattern: str
    #: Drops candidates that merely look like the kind.
    check: Callable[[str], bool] | None = None
    #: The most characters a match of `pattern` spans (None: unbounded).
    longest: int | None = None
    #: What continues a match past its bound (a long token's rest), taken whole.
    tail: str | None = None


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def luhn_valid(text: str) -> bool:
    digits = _digits(text)
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return 13 <= len(digits) <= 19 and total % 10 == 0


#: Each IBAN country and the length of its IBANs (the SWIFT IBAN registry).
IBAN_LENGTHS = {
    **dict.fromkeys(["NO"], 15),
    **dict.fromkeys(["BE"], 16),
    **dict.fromkeys(["DK", "FI", "FO", "GL", "NL"], 18),
    **dict.fromkeys(["MK", "SI"], 19),
    **dict.fromkeys(["AT", "BA", "EE", "KZ", "LT", "LU", "XK"], 20),
    **dict.fromkeys(["CH", "HR", "LI", "LV"], 21),
    **dict.fromkeys(["BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA"], 22),
    **dict.fromkeys(["AE", "GI", "IL", "IQ", "TL"], 23),
    **dict.fromkeys(["AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"], 24),
    **dict.fromkeys(["PT", "ST"], 25),
    **dict.fromkeys(["IS", "TR"], 26),
    **dict.fromkeys(["FR", "GR", "IT", "MC", "MR", "SM"], 27),
    **dict.fromkeys(["AL", "AZ", "BY", "CY", "DO", "GT", "HU", "LB", "PL", "SV"], 28),
    **dict.fromkeys(["BR", "EG", "PS", "QA", "UA"], 29),
    **dict.fromkeys(["JO", "KW", "MU"], 30),
    **dict.fromkeys(["MT", "SC"], 31),
    **dict.fromkeys(["LC"], 32),
}


def iban_valid(text: str) -> bool:
    """Mod-97, and the length of its country's IBANs: a lower-case word that happens to
    look like one (`de12...` in a hash) is not."""
    compact = text.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def ip_valid(text: str) -> bool:
    """IPv4 candidates are exact already; an IPv6-looking one must parse (not `12:30:45`)."""
    if ":" not in text:
        return True
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


# Shapes of digits that are not phone numbers: a date, and an SSN-shaped number
# (an invalid SSN such as 000-45-6789 is still not a phone number).
_NOT_A_PHONE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{3}-\d{2}-\d{4}")


def phone_valid(text: str) -> bool:
    return 7 <= len(_digits(text)) <= 15 and not _NOT_A_PHONE.fullmatch(text)


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
#: What may stand between a card's digit groups: a space, dash, dot or slash, and the
#: other dashes (NFKC keeps them).
_CARD_SEPARATOR = r"[ ./\u2010-\u2015-]"
#: Joins the digits of one number (a space may also part two numbers: `qty 3 4111 ...`).
_CARD_JOINER = r"[./\u2010-\u2015-]"
#: A domain label, and a top-level domain: letters in any script, or an IDNA `xn--` form.
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_TLD = r"(?:[^\W\d_]{2,63}|xn--[\w-]{1,59})"

#: The built-in detectors by their config name, in the order they are tried at a
#: position: the more specific first (an SSN also looks like a phone number).
BUILTIN: dict[str, Detector] = {
    "secret": Detector(
        "SECRET",
        # Not inside a word, but right after `_` or `-` (`OPENAI_KEY_sk-...`).
        r"(?<![A-Za-z0-9])(?:sk-[A-Za-z0-9_-]{16,200}|AKIA[0-9A-Z]{16}"
        r"|gh[pousr]_[A-Za-z0-9]{30,200}|github_pat_[A-Za-z0-9_]{22,200}"
        r"|xox[abprs]-[A-Za-z0-9-]{10,200}|AIza[0-9A-Za-z_-]{35})",
        longest=211,
        tail=r"[A-Za-z0-9_-]*",
    ),
    "email": Detector(
        "EMAIL",
        rf"(?<![\w.%+-])[\w.%+-]{{1,64}}@(?:{_LABEL}\.){{1,5}}{_TLD}(?![\w-])",
        longest=64 + 1 + 5 * 64 + 63,
    ),
    "iban": Detector(
        "IBAN",
        r"(?<!\w)[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,3})?(?!\w)",
        iban_valid,
        longest=4 + 7 * 5 + 4,
    ),
    "credit_card": Detector(
        "CREDIT_CARD",
        # Not in the middle of a longer number, whatever separates its groups.
        rf"(?<!\d)(?<!\d{_CARD_JOINER})(?:\d{_CARD_SEPARATOR}?){{12,18}}\d"
        rf"(?!\d)(?!{_CARD_JOINER}\d)",
        luhn_valid,
        longest=37,
    ),
    "ssn": Detector(
        "US_SSN",
        r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])",
        longest=11,
    ),
    "ip": Detector(
        "IP_ADDRESS",
        rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.\d)"
        r"|(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])",
        ip_valid,
        longest=39,
    ),
    "phone": Detector(
        "PHONE",
        r"(?<![\w+])(?:\+\d{7,15}|(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}"
        r"(?:[ .-]\d{2,4}){1,4})(?![\w]|[.-]\d)",
        phone_valid,
        longest=36,
    ),
}
