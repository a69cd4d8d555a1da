"""PII redaction's detectors: each one's positives and negatives, and streamed text."""

from __future__ import annotations

import pytest

from ai_service.config import RedactionSettings
from ai_service.policy.redaction import StreamRedactor, redactor_for
from ai_service_protos.ai_service_pb2 import ChatCompletionChunk

REDACTOR = redactor_for(
    RedactionSettings(custom=[{"name": "EMPLOYEE_ID", "pattern": r"EMP-\d{6}"}])
)

CASES = [
    # (text, kinds found)
    ("mail alice@example.com now", ["EMAIL"]),
    ("a.b+tag@mail.example.co.uk", ["EMAIL"]),
    ("not an email: alice@localhost", []),
    ("card 4111 1111 1111 1111", ["CREDIT_CARD"]),
    ("card 4111-1111-1111-1111", ["CREDIT_CARD"]),
    ("card 378282246310005", ["CREDIT_CARD"]),
    ("order 1234567812345678 fails Luhn", []),
    # A candidate failing its check hides neither another kind at its start nor a
    # valid one of its own kind inside it.
    ("call me at 0044 20 7946 0958", ["PHONE"]),
    ("qty 3 4111 1111 1111 1111", ["CREDIT_CARD"]),
    ("qty 3 5 4111 1111 1111 1111", ["CREDIT_CARD"]),
    ("card 4111 1111 1111 1111 7 items", ["CREDIT_CARD"]),
    ("ssn 123-45-6789", ["US_SSN"]),
    ("ssn 000-45-6789 is never issued", []),
    ("call +1 415-555-2671", ["PHONE"]),
    ("call (415) 555-2671", ["PHONE"]),
    ("call +442079460958", ["PHONE"]),
    ("on 2024-01-31 at noon", []),
    ("order 12345 shipped", []),
    ("host 192.168.1.20 up", ["IP_ADDRESS"]),
    ("version 1.2.3.4.5 is not an address", []),
    ("999.1.1.1 is not an address", []),
    ("v6 2001:db8::8a2e:370:7334 up", ["IP_ADDRESS"]),
    ("loopback ::1", ["IP_ADDRESS"]),
    ("at 12:30:45 sharp", []),
    ("iban GB82 WEST 1234 5698 7654 32", ["IBAN"]),
    ("iban DE89370400440532013000", ["IBAN"]),
    ("iban GB82 WEST 1234 5698 7654 33 fails mod-97", []),
    ("key sk-abcdefghijklmnop1234", ["SECRET"]),
    ("aws AKIAIOSFODNN7EXAMPLE", ["SECRET"]),
    ("sk-short is not a key", []),
    ("badge EMP-123456", ["EMPLOYEE_ID"]),
    ("plain words only", []),
]


@pytest.mark.parametrize(("text", "kinds"), CASES, ids=[c[0] for c in CASES])
def test_detector_table(text: str, kinds: list[str]) -> None:
    assert [f.kind for f in REDACTOR.find(text)] == kinds
    redacted = REDACTOR.redact(text)
    for kind in kinds:
        assert f"[REDACTED:{kind}]" in redacted
    if not kinds:
        assert redacted == text


def test_redaction_replaces_only_the_match() -> None:
    assert REDACTOR.redact("mail alice@example.com or call +1 415-555-2671.") == (
        "mail [REDACTED:EMAIL] or call [REDACTED:PHONE]."
    )


def chunk(text: str, finish: str = "") -> ChatCompletionChunk:
    piece = ChatCompletionChunk()
    choice = piece.choices.add(index=0, finish_reason=finish)
    choice.delta.content = text
    return piece


def test_stream_redaction_catches_an_email_split_across_two_chunks() -> None:
    stream = StreamRedactor(REDACTOR, window=32)
    pieces = ["write to ali", "ce@example.com please, thanks", " bye", ""]
    out = []
    for i, text in enumerate(pieces):
        c = chunk(text, finish="stop" if i == len(pieces) - 1 else "")
        stream.apply(c)
        out.append(c.choices[0].delta.content)
    assert "".join(out) == "write to [REDACTED:EMAIL] please, thanks bye"
    assert "ali" not in out[0]  # the start of the address was held back, not leaked
    assert stream.found == {"EMAIL"}
