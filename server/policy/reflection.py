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

    def chunk(self, chunk: ChatCompletionChunk) -> None:
        chunk.id = SECRETS.scrub(chunk.id)
        chunk.model = SECRETS.scrub(chunk.model)
        last = chunk.HasField("usage") or any(c.finish_reason for c in chunk.choices)
        for choice in chunk.choices:
            delta = choice.delta
            delta.content = self._pass((choice.index, -1), delta.content, last)
            for call in delta.tool_calls:
                arguments = call.function.arguments
                call.function.arguments = self._pass((choice.index, call.index), arguments, last)
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
        return masked(text[:cut], [span for span in spans if span[1] <= cut])
