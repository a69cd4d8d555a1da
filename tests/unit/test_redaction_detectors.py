"""PII redaction's detectors: each one's positives and negatives, and streamed text."""

from __future__ import annotations

import inspect
import json
import re

import pytest

from ai_service.config import RedactionSettings
from ai_service.policy.detectors import BUILTIN
from ai_service.policy.redaction import StreamRedactor, redactor_for
from ai_service.policy.scanner import SCAN_SLICE, Finding, Redactor
from ai_service_protos.ai_service_pb2 import ChatCompletionChunk
from tests.fixtures import FIXTURES

REDACTOR = redactor_for(
    RedactionSettings(custom=[{"name": "EMPLOYEE_ID", "pattern": r"EMP-\d{6}"}])
)

#: Positives and negatives of every detector, shared by every test that scans text.
CORPUS = json.loads((FIXTURES / "pii_corpus.json").read_text(encoding="utf-8"))["cases"]
CASES = [(case["text"], case["kinds"]) for case in CORPUS]


@pytest.mark.parametrize(("text", "kinds"), CASES, ids=[c["why"] for c in CORPUS])
def test_detector_table(text: str, kinds: list[str]) -> None:
    assert [f.kind for f in REDACTOR.find(text)] == kinds
    redacted = REDACTOR.redact(text)
    for kind in kinds:
        assert f"[REDACTED:{kind}]" in redacted
    if not kinds:
        assert redacted == text


def test_redaction_replaces_the_original_span_of_a_folded_match() -> None:
    # Found in the folded copy; what is replaced is the caller's own characters.
    zero_width = "card 4\u200b111 1111 1111 1111\u200b ok"
    assert REDACTOR.redact(zero_width) == "card [REDACTED:CREDIT_CARD]\u200b ok"
    ligature = "mail \ufb01le@example.com now"  # the "fi" ligature folds to two letters
    assert REDACTOR.redact(ligature) == "mail [REDACTED:EMAIL] now"
    fullwidth = "x " + "4111 1111 1111 1111".translate({c: c + 0xFEE0 for c in range(48, 58)}) + "."
    assert REDACTOR.redact(fullwidth) == "x [REDACTED:CREDIT_CARD]."


def test_redaction_replaces_only_the_match() -> None:
    assert REDACTOR.redact("mail alice@example.com or call +1 415-555-2671.") == (
        "mail [REDACTED:EMAIL] or call [REDACTED:PHONE]."
    )


def chunk(text: str, finish: str = "") -> ChatCompletionChunk:
    piece = ChatCompletionChunk()
    choice = piece.choices.add(index=0, finish_reason=finish)
    choice.delta.content = text
    return piece


async def test_stream_redaction_catches_an_email_split_across_two_chunks() -> None:
    stream = StreamRedactor(REDACTOR, window=32)
    pieces = ["write to ali", "ce@example.com please, thanks", " bye", ""]
    out = []
    for i, text in enumerate(pieces):
        c = chunk(text, finish="stop" if i == len(pieces) - 1 else "")
        await stream.apply(c)
        out.append(c.choices[0].delta.content)
    assert "".join(out) == "write to [REDACTED:EMAIL] please, thanks bye"
    assert "ali" not in out[0]  # the start of the address was held back, not leaked
    assert stream.found == {"EMAIL"}


class CountingRedactor(Redactor):
    """Counts the characters the stream redactor hands over to be scanned."""

    scanned_chars = 0

    def find(self, text: str) -> list[Finding]:
        self.scanned_chars += len(text)
        return super().find(text)

    async def find_async(self, text: str) -> list[Finding]:
        self.scanned_chars += len(text)
        return super().find(text)


async def _streamed(stream: StreamRedactor, pieces: list[str]) -> list[str]:
    out = []
    for i, text in enumerate(pieces):
        c = chunk(text, finish="stop" if i == len(pieces) - 1 else "")
        applied = stream.apply(c)
        if inspect.isawaitable(applied):
            await applied
        out.append(c.choices[0].delta.content)
    return out


@pytest.mark.parametrize(
    "text",
    ["sk-" + "a" * 17_997, "plain words and a 4111 1111 1111 1111 card " * 420],
    ids=["one growing match", "prose"],
)
async def test_a_long_stream_is_scanned_a_few_times_per_character_not_once_per_chunk(
    text: str,
) -> None:
    redactor = CountingRedactor([BUILTIN["secret"], BUILTIN["credit_card"]])
    out = await _streamed(StreamRedactor(redactor, window=64), [*text, ""])
    assert "aaaa" not in "".join(out) and "4111" not in "".join(out)
    assert redactor.scanned_chars <= 4 * len(text)


async def test_an_entity_longer_than_the_window_is_held_back_whole() -> None:
    local = "firstname.middlename.lastname.department.team.region.office"  # 59 characters
    text = f"write to {local}@example.com please"
    pieces = [text[i : i + 5] for i in range(0, len(text), 5)]
    out = await _streamed(StreamRedactor(REDACTOR, window=32), [*pieces, ""])
    assert "".join(out) == "write to [REDACTED:EMAIL] please"
    assert all("first" not in piece for piece in out)


def test_every_builtin_match_fits_its_declared_bound() -> None:
    for name, detector in BUILTIN.items():
        widest = re._parser.parse(detector.pattern).getwidth()[1]  # type: ignore[attr-defined]
        assert detector.longest is not None and widest <= detector.longest, name


def test_a_long_text_scanned_in_slices_finds_what_lies_across_every_slice_edge() -> None:
    entities = [
        "alice@example.com",
        "4111 1111 1111 1111",
        "sk-" + "b" * 40,
        "GB82 WEST 1234 5698 7654 32",
    ]
    text, expected = "", []
    for i in range(40):
        entity = entities[i % len(entities)]
        # Each entity straddles a slice's far edge by a different amount.
        start = (i + 1) * SCAN_SLICE - 1 - (i * 7) % len(entity)
        filler = start - len(text)
        text += " " + "x" * (filler - 2) + " "
        expected.append((start, start + len(entity)))
        text += entity
    text += " end"
    assert [(f.start, f.end) for f in REDACTOR.find(text)] == expected
