"""Body framing shared by every adapter: lines, server-sent events, NDJSON.

Upstream bodies arrive in pieces of any size; these turn them into whole lines
and whole SSE events without decoding to str (the adapters parse bytes with
orjson). A line longer than `MAX_LINE_BYTES` is a broken or hostile upstream and
fails the call rather than growing a buffer without bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from server.errors import UpstreamUnavailable

MAX_LINE_BYTES = 4 * 1024 * 1024


async def iter_lines(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Lines without their `\\n` / `\\r\\n` ending; a last unterminated line too."""
    pending = b""
    async for piece in pieces:
        pending += piece
        if b"\n" not in piece:
            if len(pending) > MAX_LINE_BYTES:
                raise UpstreamUnavailable(f"upstream sent a line over {MAX_LINE_BYTES} bytes")
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line[:-1] if line.endswith(b"\r") else line
    if pending:
        yield pending


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: bytes


async def iter_sse(pieces: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Server-sent events as the WHATWG spec frames them: fields, blank-line dispatch."""
    event = ""
    data: list[bytes] = []
    async for line in iter_lines(pieces):
        if not line:
            if data:
                yield SSEEvent(event or "message", b"\n".join(data))
            event, data = "", []
            continue
        if line.startswith(b":"):
            continue  # a comment, used by servers as a keep-alive
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    if data:
        # An unterminated last event still counts; whether the stream ended
        # properly is the adapter's question (OpenAI's `[DONE]`, Anthropic's
        # `message_stop`), not the framing's.
        yield SSEEvent(event or "message", b"\n".join(data))
