"""Body framing shared by every adapter: lines, server-sent events, NDJSON.

Upstream bodies arrive in pieces of any size; the decoders here turn them into
whole lines and whole SSE events without decoding to str (the adapters parse bytes with
orjson). The `*_batches` forms yield everything one network read completed at
once, so an adapter can coalesce what has already arrived into fewer gRPC
messages without ever waiting for more. A line longer than `MAX_LINE_BYTES` is a
broken or hostile upstream and fails the call rather than growing a buffer
without bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, NamedTuple, Protocol, TypeVar

from ai_service.errors import UpstreamUnavailable

MAX_LINE_BYTES = 4 * 1024 * 1024

T = TypeVar("T")


class Decoder(Protocol[T]):
    def feed(self, piece: bytes) -> list[T]:
        """What `piece` completes."""
        ...

    def finish(self) -> list[T]:
        """What is left when the body ends."""
        ...


class LineSplitter:
    """Whole lines, without their `\\n` / `\\r\\n` ending, out of pieces of any size."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, piece: bytes) -> list[bytes]:
        pending = self._pending + piece
        if b"\n" not in piece:
            if len(pending) > MAX_LINE_BYTES:
                raise UpstreamUnavailable(f"upstream sent a line over {MAX_LINE_BYTES} bytes")
            self._pending = pending
            return []
        *lines, self._pending = pending.split(b"\n")
        if b"\r" not in pending:
            return lines
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]

    def finish(self) -> list[bytes]:
        tail, self._pending = self._pending, b""
        return [tail] if tail else []  # a last unterminated line still counts


_BOM = b"\xef\xbb\xbf"


class SSEEvent(NamedTuple):
    # A tuple, not a frozen dataclass: one is built per event of every stream.
    event: str
    data: bytes


class SSEDecoder:
    """Server-sent events as the WHATWG spec frames them: fields, blank-line dispatch."""

    def __init__(self) -> None:
        self._lines = LineSplitter()
        self._event = ""
        self._data: list[bytes] = []
        self._started = False

    def feed(self, piece: bytes) -> list[SSEEvent]:
        if not self._started and piece:
            # The spec drops one leading byte-order mark; kept, it would hide the first
            # field's name. (A first read shorter than the mark is not worth handling.)
            self._started = True
            piece = piece.removeprefix(_BOM)
        return self._events(self._lines.feed(piece))

    def finish(self) -> list[SSEEvent]:
        # An unterminated last event still counts; whether the stream ended
        # properly is the adapter's question (OpenAI's `[DONE]`, Anthropic's
        # `message_stop`), not the framing's.
        return self._events([*self._lines.finish(), b""])

    def _events(self, lines: list[bytes]) -> list[SSEEvent]:
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


class Batches(Generic[T]):
    """What each network read completed, in order, until the body ends.

    An async iterator object rather than an async generator: an adapter leaves it as
    soon as the provider's end marker arrives, and an abandoned async generator would
    cost the event loop a finalizer task per stream.
    """

    def __init__(self, pieces: AsyncIterator[bytes], decoder: Decoder[T]) -> None:
        self._pieces = pieces
        self._decoder = decoder
        self._ended = False

    def __aiter__(self) -> Batches[T]:
        return self

    async def __anext__(self) -> list[T]:
        while not self._ended:
            piece = await anext(self._pieces, None)
            if piece is None:
                self._ended = True
                items = self._decoder.finish()
            else:
                items = self._decoder.feed(piece)
            if items:
                return items
        raise StopAsyncIteration


def iter_line_batches(pieces: AsyncIterator[bytes]) -> Batches[bytes]:
    """The lines each network read completed (NDJSON bodies)."""
    return Batches(pieces, LineSplitter())


def iter_sse_batches(pieces: AsyncIterator[bytes]) -> Batches[SSEEvent]:
    """The server-sent events each network read completed."""
    return Batches(pieces, SSEDecoder())
