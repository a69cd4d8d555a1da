"""What counts as personal or secret data: one `Detector` per kind, patterns plus checks.

A pattern finds candidates; a check (Luhn for cards, mod-97 for IBANs, the address
parser for IPv6, digit counts for phones) drops the ones that only look alike, so
a 16-digit order number that fails Luhn is not a card. Every pattern may start
only at a token boundary, which keeps a scan linear in the text's length.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Detector:
    #: What a match is replaced with: `[REDACTED:<kind>]`.
    kind: str
    pattern: str
    #: Drops candidates that merely look like the kind.
    check: Callable[[str], bool] | None = None


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


def iban_valid(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
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

#: The built-in detectors by their config name, in the order they are tried at a
#: position: the more specific first (an SSN also looks like a phone number).
BUILTIN: dict[str, Detector] = {
    "secret": Detector(
        "SECRET",
        r"(?<![\w-])(?:sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
        r"|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})",
    ),
    "email": Detector(
        "EMAIL", r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
    ),
    "iban": Detector(
        "IBAN", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", iban_valid
    ),
    "credit_card": Detector("CREDIT_CARD", r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])", luhn_valid),
    "ssn": Detector(
        "US_SSN", r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])"
    ),
    "ip": Detector(
        "IP_ADDRESS",
        rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.\d)"
        r"|(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])",
        ip_valid,
    ),
    "phone": Detector(
        "PHONE",
        r"(?<![\w+])(?:\+\d{7,15}|(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}"
        r"(?:[ .-]\d{2,4}){1,4})(?![\w]|[.-]\d)",
        phone_valid,
    ),
}
