"""PII redaction: find sensitive data in prompts (and answers) and act per model or key.

Modes (`redaction.mode`, overridden per model, and per key above that):

* `redact` — matches become `[REDACTED:EMAIL]` before the upstream sees the prompt;
* `block` — the call fails FAILED_PRECONDITION naming the kinds found;
* `log-only` — the call goes on untouched; the audit log notes the kinds found
  and, if it keeps prompts, keeps them redacted;
* `off` — no scan at all.

With `answers: true`, answers of calls in `redact` or `block` mode are redacted
too; a streamed answer holds back `stream_window_chars` so a match split across
chunks is still caught (`StreamRedactor`). The audit log never keeps unredacted
text, whatever the mode. Patterns are compiled once, at start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc

from ai_service.calls.record import CallRecord
from ai_service.config import RedactionMode, RedactionSettings
from ai_service.errors import GatewayError
from ai_service.policy.detectors import BUILTIN, Detector
from ai_service.policy.text_fields import answer_fields, message_text, text_fields
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
)


class SensitiveDataBlocked(GatewayError):
    """The prompt holds data this model or key may not send upstream."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "SENSITIVE_DATA"

    def __init__(self, kinds: Iterable[str]) -> None:
        names = ",".join(sorted(kinds))
        super().__init__(
            f"the request contains sensitive data ({names}), which this model or key may not "
            f"send; remove it and retry",
            metadata={"kinds": names},
        )


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    start: int
    end: int


#: A failed candidate is taken apart only if it is this short (cards, phones, IBANs
#: are), and at most this many times per text: the scan stays linear on any input.
_MAX_RESCAN_CHARS = 48
_MAX_RESCANS = 64


class Redactor:
    """The configured detectors, scanned in one pass where they can be combined."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self._detectors = {f"d{i}": detector for i, detector in enumerate(detectors)}
        self._pattern = re.compile(
            "|".join(f"(?P<{group}>{d.pattern})" for group, d in self._detectors.items())
        )
        # Each alone, in the same order: for where the combined scan's first candidate
        # fails its check but another kind starts at the same place.
        self._each = [(re.compile(d.pattern), d) for d in self._detectors.values()]

    def find(self, text: str) -> list[Finding]:
        findings = []
        rescans = _MAX_RESCANS
        at = 0
        while (match := self._pattern.search(text, at)) is not None:
            group = match.lastgroup
            assert group is not None
            detector = self._detectors[group]
            found: Finding | None = None
            if detector.check is None or detector.check(match.group()):
                found = Finding(detector.kind, match.start(), match.end())
            elif rescans > 0:
                # A candidate that only looked alike (a 14-digit run failing Luhn) must
                # not hide what it overlaps: a phone number, or a card after `3 `.
                rescans -= 1
                found = self._within(text, match.start(), match.end(), detector)
            if found is None:
                at = max(match.end(), match.start() + 1)
                continue
            findings.append(found)
            at = max(found.end, found.start + 1)
        return findings

    def _within(self, text: str, start: int, end: int, failed: Detector) -> Finding | None:
        """The earliest, then longest, valid finding inside a failed candidate's span,
        tried between the span's word boundaries: of any kind where the span starts,
        and further in of the failed kind only (the digits inside a bad IBAN are no
        phone number)."""
        if end - start > _MAX_RESCAN_CHARS:
            return None
        span = range(start, end)
        starts = [
            p for p in span if p == start or (text[p - 1].isspace() and not text[p].isspace())
        ]
        ends = [q for q in reversed(span) if q > start and text[q].isspace()]
        for first in starts:
            for last in (end, *(q for q in ends if q > first)):
                for pattern, detector in self._each:
                    if first != start and detector is not failed:
                        continue
                    match = pattern.fullmatch(text, first, last)
                    if match and (detector.check is None or detector.check(match.group())):
                        return Finding(detector.kind, first, last)
        return None

    def redact(self, text: str, findings: Sequence[Finding] | None = None) -> str:
        findings = self.find(text) if findings is None else findings
        if not findings:
            return text
        pieces: list[str] = []
        at = 0
        for found in findings:
            pieces += (text[at : found.start], f"[REDACTED:{found.kind}]")
            at = found.end
        pieces.append(text[at:])
        return "".join(pieces)


def redactor_for(settings: RedactionSettings) -> Redactor:
    detectors = [BUILTIN[name] for name in BUILTIN if name in settings.detectors]
    detectors += [Detector(custom.name, f"(?:{custom.pattern})") for custom in settings.custom]
    return Redactor(detectors)


class Screening:
    """The policy applied to one call: its prompt at admission, then its answer."""

    def __init__(
        self,
        redactor: Redactor,
        mode: RedactionMode,
        call: CallRecord | None,
        *,
        answers: bool,
        window: int,
        keep_text: bool,
    ) -> None:
        self._redactor = redactor
        self._mode = mode
        self._call = call
        self._redact_answers = answers and mode in ("redact", "block")
        self._window = window
        # The audit log's copy of the answer, when it keeps prompts.
        self._answer: list[str] | None = [] if keep_text and call is not None else None
        self._stream: StreamRedactor | None = None

    def prompt(self, request: ChatCompletionRequest) -> None:
        """Block, redact or note what the prompt holds; keep it for the audit log."""
        found: set[str] = set()
        if self._mode != "off":
            for field in text_fields(request):
                findings = self._redactor.find(field.text)
                found.update(f.kind for f in findings)
                if findings and self._mode == "redact" and field.editable:
                    field.set(self._redactor.redact(field.text, findings))
        if self._call is not None:
            self._call.pii |= found  # a blocked call's audit record says why, too
        if found and self._mode == "block":
            raise SensitiveDataBlocked(found)
        if self._call is not None and self._answer is not None:
            text = "\n".join(f"{m.role}: {message_text(m)}" for m in request.messages)
            self._call.prompt = text if self._mode == "redact" else self._redactor.redact(text)

    def answer(self, response: ChatCompletionResponse) -> None:
        if self._answer is not None:
            self._answer += (choice.message.content for choice in response.choices)
        if self._redact_answers:
            for field in answer_fields(response):
                findings = self._redactor.find(field.text)
                if findings:
                    if field.editable:
                        field.set(self._redactor.redact(field.text, findings))
                    if self._call is not None:  # as a stream's are (StreamRedactor.found)
                        self._call.pii.update(f.kind for f in findings)
        self._finish()

    def chunk(self, chunk: ChatCompletionChunk) -> None:
        if self._redact_answers:
            if self._stream is None:
                self._stream = StreamRedactor(self._redactor, self._window)
            self._stream.apply(chunk)
        if self._answer is not None:  # on every chunk: nothing to do unless text is kept
            for choice in chunk.choices:
                self._answer.append(choice.delta.content)

    def stream_ended(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._call is None:
            return
        if self._stream is not None:
            self._call.pii |= self._stream.found
        if self._answer is not None:
            self._call.answer = self._redactor.redact("".join(self._answer))


class StreamRedactor:
    """Redacts a streamed answer, holding back a window of text per choice.

    Text is released once `window` more characters have arrived after it, so an
    entity split across chunks is whole when scanned; a match that straddles the
    release point is held back entire. The chunk that carries a finish reason
    releases everything.
    """

    def __init__(self, redactor: Redactor, window: int) -> None:
        self._redactor = redactor
        self._window = window
        self._held: dict[int, str] = {}
        self.found: set[str] = set()

    def apply(self, chunk: ChatCompletionChunk) -> None:
        for choice in chunk.choices:
            for piece in choice.delta.reasoning:
                # Reasoning pieces are scanned as they come, not held back: whether a
                # block is signed (and so may not change) is known only at its end.
                self.found.update(f.kind for f in self._redactor.find(piece.text))
            text = self._held.pop(choice.index, "") + choice.delta.content
            findings = self._redactor.find(text)
            cut = len(text) if choice.finish_reason else len(text) - self._window
            for found in findings:
                if found.start < cut < found.end:
                    cut = found.start
            cut = max(cut, 0)
            released = [f for f in findings if f.end <= cut]
            self.found.update(f.kind for f in released)
            if cut < len(text):
                self._held[choice.index] = text[cut:]
            choice.delta.content = self._redactor.redact(text[:cut], released)


class RedactionPolicy:
    """The configured modes, and a `Screening` per call."""

    def __init__(self, settings: RedactionSettings, *, keep_text: bool) -> None:
        self._settings = settings
        self._redactor = redactor_for(settings)
        self._keep_text = keep_text
        # What a call with redaction off and no audit copy gets: a screening that does
        # nothing and keeps nothing, so one serves every such call.
        self._unscreened = Screening(
            self._redactor, "off", None, answers=False, window=0, keep_text=False
        )

    def mode_for(self, key: str, model: str) -> RedactionMode:
        settings = self._settings
        return settings.keys.get(key) or settings.models.get(model) or settings.mode

    def screening(self, key: str, model: str, call: CallRecord | None) -> Screening:
        mode = self.mode_for(key, model)
        if mode == "off" and not self._keep_text:
            return self._unscreened
        return Screening(
            self._redactor,
            mode,
            call,
            answers=self._settings.answers,
            window=self._settings.stream_window_chars,
            keep_text=self._keep_text,
        )
