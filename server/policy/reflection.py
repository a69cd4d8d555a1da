"""Configured secrets an upstream reflects into an answer never reach the caller.

An upstream (or a proxy on the way) that echoes the gateway's own credentials into a
successful answer must not hand them to the caller. A unary answer is scrubbed
whole; a stream keeps back, per choice and per tool call, only the few trailing
characters that could begin a secret continued in the next chunk (usually none), so
a secret split over chunks is still caught and the stream is not slowed.
"""

from __future__ import annotations

from ai_service.secrecy import SECRETS, masked
from ai_service_protos.ai_service_pb2 import ChatCompletionChunk, ChatCompletionResponse


def scrub_answer(response: ChatCompletionResponse) -> None:
    response.id = SECRETS.scrub(response.id)
    response.model = SECRETS.scrub(response.model)
    for choice in response.choices:
        message = choice.message
        message.content = SECRETS.scrub(message.content)
        for call in message.tool_calls:
            call.function.arguments = SECRETS.scrub(call.function.arguments)


class ReflectionGuard:
    """Scrubs one stream's chunks, holding back what could be the start of a secret."""

    def __init__(self) -> None:
        #: (choice index, tool call index or -1 for the text) → text held back.
        self._held: dict[tuple[int, int], str] = {}
        #: A stream's id and model repeat on every chunk: each is scrubbed once.
        self._scrubbed: dict[str, str] = {}

    def chunk(self, chunk: ChatCompletionChunk) -> None:
        for name in ("id", "model"):
            value = getattr(chunk, name)
            scrubbed = self._once(value)
            if scrubbed is not value:
                setattr(chunk, name, scrubbed)
        last = chunk.HasField("usage") or any(c.finish_reason for c in chunk.choices)
        for choice in chunk.choices:
            delta = choice.delta
            content = delta.content
            passed = self._pass((choice.index, -1), content, last)
            if passed != content:
                delta.content = passed
            if delta.tool_calls:
                for call in delta.tool_calls:
                    arguments = call.function.arguments
                    key = (choice.index, call.index)
                    call.function.arguments = self._pass(key, arguments, last)
        if last and self._held:  # the stream ends: what is held goes out, scrubbed
            for (index, slot), text in sorted(self._held.items()):
                found = [c for c in chunk.choices if c.index == index]
                choice = found[0] if found else chunk.choices.add(index=index)
                if slot < 0:
                    choice.delta.content = SECRETS.scrub(text) + choice.delta.content
                else:
                    call = choice.delta.tool_calls.add(index=slot)
                    call.function.arguments = SECRETS.scrub(text)
            self._held.clear()

    def _once(self, text: str) -> str:
        """`text` scrubbed; `text` itself when nothing in it is secret."""
        scrubbed = self._scrubbed.get(text)
        if scrubbed is None:
            scrubbed = SECRETS.scrub(text)
            self._scrubbed[text] = text if scrubbed == text else scrubbed
        return text if scrubbed == text else scrubbed

    def _pass(self, key: tuple[int, int], text: str, last: bool) -> str:
        held = self._held.pop(key, "")
        if not text and not held:
            return ""
        text = held + text
        spans = SECRETS.spans(text)
        cut = len(text) if last else len(text) - SECRETS.partial_tail(text)
        for start, end in spans:
            if start < cut < end:
                cut = start
        if cut < len(text):
            self._held[key] = text[cut:]
            text = text[:cut]
        return masked(text, [span for span in spans if span[1] <= cut]) if spans else text
