"""PII redaction: find sensitive data in prompts (and answers) and act per model or key.

Modes (`redaction.mode`, overridden per model, and per key above that):

* `redact` — matches become `[REDACTED:EMAIL]` before the upstream sees the prompt
  (`REDACTED_EMAIL` in an identifier, such as a function's name);
* `block` — the call fails FAILED_PRECONDITION naming the kinds found;
* `log-only` — the call goes on untouched; the audit log notes the kinds found
  and, if it keeps prompts, keeps them redacted;
* `off` — no scan at all.

What is screened is everything the upstream receives (`fields.py`): message contents
and names, tool definitions and schemas, earlier tool calls' arguments, `stop`,
`user` and a response's JSON schema. A call may reach several models (its fallbacks
may serve it): the strictest mode among them applies, before any byte goes
upstream.

With `answers: true`, answers of calls in `redact` or `block` mode are redacted
too; a streamed answer holds back `stream_window_chars` so a match split across
chunks is still caught (`StreamRedactor`). The audit log never keeps unredacted
text, whatever the mode. Patterns are compiled once, at start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import grpc

from ai_service.calls.record import CallRecord
from ai_service.config import RedactionMode, RedactionSettings
from ai_service.errors import GatewayError
from ai_service.policy import fields
from ai_service.policy.detectors import BUILTIN, Detector
from ai_service.policy.scanner import Finding, Redactor
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbedRequest,
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


def redactor_for(settings: RedactionSettings) -> Redactor:
    detectors = [BUILTIN[name] for name in BUILTIN if name in settings.detectors]
    detectors += [Detector(custom.name, f"(?:{custom.pattern})") for custom in settings.custom]
    return Redactor(detectors)


_TEXT_TEMPLATE = "[REDACTED:{}]"
#: In an identifier (a function's name, a call's id), where brackets are not allowed.
_NAME_TEMPLATE = "REDACTED_{}"

#: The modes from the least strict to the strictest.
_STRICTNESS: tuple[RedactionMode, ...] = ("off", "log-only", "redact", "block")


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

    async def prompt(self, request: ChatCompletionRequest | EmbedRequest) -> None:
        """Block, redact or note what the request holds; keep it for the audit log."""
        found: set[str] = set()
        if self._mode != "off":
            found = await self._screen(request, redact=self._mode == "redact")
        if self._call is not None:
            self._call.pii |= found  # a blocked call's audit record says why, too
        if found and self._mode == "block":
            raise SensitiveDataBlocked(found)
        if self._call is not None and self._answer is not None:
            text = (
                "\n".join(request.inputs)
                if isinstance(request, EmbedRequest)
                else "\n".join(f"{m.role}: {fields.message_text(m)}" for m in request.messages)
            )
            if self._mode != "redact":
                text = self._redactor.redact(text, await self._redactor.find_async(text))
            self._call.prompt = text

    async def _screen(
        self, request: ChatCompletionRequest | EmbedRequest, *, redact: bool
    ) -> set[str]:
        """The kinds found in every text the upstream receives; redacted if asked."""
        texts = list(fields.upstream_texts(request))
        values = [fields.parsed(t) if t.shape in ("json", "value") else None for t in texts]
        units: list[list[str]] = [
            fields.leaves(value) if value is not None else [text.get()]
            for text, value in zip(texts, values, strict=True)
        ]
        findings = await self._redactor.find_each([unit for group in units for unit in group])
        found = {f.kind for each in findings for f in each}
        if not (found and redact):
            return found
        at = 0
        for text, value, group in zip(texts, values, units, strict=True):
            pieces = findings[at : at + len(group)]
            at += len(group)
            if not any(pieces):
                continue
            template = _NAME_TEMPLATE if text.shape == "name" else _TEXT_TEMPLATE
            redacted = [
                self._redactor.redact(unit, piece, template)
                for unit, piece in zip(group, pieces, strict=True)
            ]
            if not text.editable:  # a signature covers it: screened, never rewritten
                continue
            if value is None:
                text.set(redacted[0])
            else:
                fields.store(text, fields.rebuilt(value, redacted))
        return found

    async def answer(self, response: ChatCompletionResponse) -> None:
        if self._answer is not None:
            self._answer.extend(choice.message.content for choice in response.choices)
        if self._redact_answers:
            for text in fields.answer_texts(response):  # content and reasoning
                findings = await self._redactor.find_async(text.get())
                if not findings:
                    continue
                if text.editable:
                    text.set(self._redactor.redact(text.get(), findings))
                if self._call is not None:  # as a stream's are (StreamRedactor.found)
                    self._call.pii.update(f.kind for f in findings)
        await self._finish()

    @property
    def reads_chunks(self) -> bool:
        """Whether `chunk` has anything to do: a stream skips the call on every chunk when not."""
        return self._redact_answers or self._answer is not None

    async def chunk(self, chunk: ChatCompletionChunk) -> None:
        if self._redact_answers:
            if self._stream is None:
                self._stream = StreamRedactor(self._redactor, self._window)
            await self._stream.apply(chunk)
        if self._answer is not None:  # on every chunk: nothing to do unless text is kept
            for choice in chunk.choices:
                self._answer.append(choice.delta.content)

    async def stream_ended(self) -> None:
        await self._finish()

    async def _finish(self) -> None:
        if self._call is None:
            return
        if self._stream is not None:
            self._call.pii |= self._stream.found
        if self._answer is not None:
            text = "".join(self._answer)
            self._call.answer = self._redactor.redact(text, await self._redactor.find_async(text))


class StreamRedactor:
    """Redacts a streamed answer, holding back text per choice until it is safe to send.

    Text is held until at least `window` more characters have arrived after it (the
    longest entity with spaces in it that is caught across chunks), and a trailing run
    without whitespace is held whole (an address or a token longer than the window
    is not released by its start), up to the longest entity a detector finds; a
    finding that straddles the release point is held back entire. The chunk that
    carries a finish reason releases everything.

    The held text is scanned again only once it has grown by as much as was held
    after the last scan (and by a window at least): a match that keeps growing is
    rescanned at doubling lengths, so the whole stream costs a few scans of each
    character, never one per chunk.
    """

    def __init__(self, redactor: Redactor, window: int) -> None:
        self._redactor = redactor
        self._window = window
        self._held: dict[int, str] = {}
        #: Per choice: the length its held text must reach before it is scanned again.
        self._due: dict[int, int] = {}
        self.found: set[str] = set()

    async def apply(self, chunk: ChatCompletionChunk) -> None:
        for choice in chunk.choices:
            for piece in choice.delta.reasoning:
                # Reasoning pieces are scanned as they come, not held back: whether a
                # block is signed (and so may not change) is known only at its end.
                self.found.update(f.kind for f in await self._redactor.find_async(piece.text))
            index = choice.index
            text = self._held.pop(index, "") + choice.delta.content
            if not choice.finish_reason and len(text) < self._due.get(index, 0):
                self._held[index] = text
                choice.delta.content = ""
                continue
            findings = await self._redactor.find_async(text)
            cut = len(text) if choice.finish_reason else self._release_point(text, findings)
            released = [f for f in findings if f.end <= cut]
            self.found.update(f.kind for f in released)
            rest = len(text) - cut
            if rest:
                self._held[index] = text[cut:]
                self._due[index] = rest + max(rest, self._window)
            choice.delta.content = self._redactor.redact(text[:cut], released)

    def _release_point(self, text: str, findings: list[Finding]) -> int:
        cut = len(text) - self._window
        # None when the run is longer than any entity: it is not held for being one.
        run = _TRAILING_RUN.search(text, max(len(text) - self._redactor.reach, 0))
        if run is not None:
            cut = min(cut, run.start())
        for found in findings:
            if found.start < cut < found.end:
                cut = found.start
        return max(cut, 0)


#: The characters after the last whitespace (tried only where a run starts).
_TRAILING_RUN = re.compile(r"(?<!\S)\S*+\Z")


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

    def strictest_mode(self, key: str, models: Sequence[str]) -> RedactionMode:
        """The strictest mode among every model a call may reach (the key's own mode,
        where it has one, is every model's)."""
        return max((self.mode_for(key, model) for model in models), key=_STRICTNESS.index)

    def screening(self, key: str, models: Sequence[str], call: CallRecord | None) -> Screening:
        """The screening of a call by `key` that may be served by any of `models`."""
        mode = self.strictest_mode(key, models)
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
