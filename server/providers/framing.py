"""Body framing shared by every adapter: lines, server-sent events, NDJSON.

Upstream bodies arrive in pieces of any size; these turn them into whole lines
and whole SSE events without decoding to str (the adapters parse bytes with
orjson). The `*_batches` forms yield everything one network read completed at
once, so an adapter can coalesce what has already arrived into fewer gRPC
messages without ever waiting for more. A line longer than `MAX_LINE_BYTES` is a
broken or hostile upstream and fails the call rather than growing a buffer
without bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NamedTuple

from server.errors import UpstreamUnavailable

MAX_LINE_BYTES = 4 * 1024 * 1024


async def iter_line_batches(pieces: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """The lines each piece completes, without their `\\n` / `\\r\\n` ending."""
    pending = b""
    async for piece in pieces:
        pending += piece
        if b"\n" not in piece:
            if len(pending) > MAX_LINE_BYTES:
                raise UpstreamUnavailable(f"upstream sent a line over {MAX_LINE_BYTES} bytes")
            continue
        *lines, pending = pending.split(b"\n")
        yield [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if pending:
        yield [pending]  # a last unterminated line still counts


async def iter_lines(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for lines in iter_line_batches(pieces):
        for line in lines:
            yield line


class SSEEvent(NamedTuple):
    # A tuple, not a frozen dataclass: one is built per event of every stream.
    event: str
    data: bytes


class _SSEParser:
    """Server-sent events as the WHATWG spec frames them: fields, blank-line dispatch."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[bytes] = []

    def feed(self, lines: list[bytes]) -> list[SSEEvent]:
        events = []
        for line in lines:
            if line[:6] == b"data: ":  # nearly every line of a stream
                self._data.append(line[6:])
                continue
            if not line:
                if self._data:
                    events.append(SSEEvent(self._event or "message", b"\n".join(self._data)))
                self._event, self._data = "", []
                continue
            if line.startswith(b":"):
                continue  # a comment, used by servers as a keep-alive
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
        return events

    def finish(self) -> list[SSEEvent]:
        # An unterminated last event still counts; whether the stream ended
        # properly is the adapter's question (OpenAI's `[DONE]`, Anthropic's
        # `message_stop`), not the framing's.
        return self.feed([b""])


async def iter_sse_batches(pieces: AsyncIterator[bytes]) -> AsyncIterator[list[SSEEvent]]:
    """The events each network read completed, in order."""
    parser = _SSEParser()
    async for lines in iter_line_batches(pieces):
        events = parser.feed(lines)
        if events:
            yield events
    tail = parser.finish()
    if tail:
        yield tail


async def iter_sse(pieces: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    async for events in iter_sse_batches(pieces):
        for event in events:
            yield event
