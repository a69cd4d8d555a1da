"""SSE and line framing over bodies that arrive in arbitrary pieces."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from server.errors import UpstreamUnavailable
from server.providers import framing
from server.providers.framing import SSEEvent, iter_lines, iter_sse


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"a": 1}\n\n'
    b'event: message_start\r\ndata: {"b": 2}\r\n\r\n'
    b"data: line one\ndata: line two\n\n"
    b"data:no-space\n\n"
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("size", [1, 2, 7, 64, 10_000])
async def test_sse_events_are_the_same_whatever_the_piece_size(size: int) -> None:
    events = [e async for e in iter_sse(pieces(STREAM, size))]
    assert events == [
        SSEEvent("message", b'{"a": 1}'),
        SSEEvent("message_start", b'{"b": 2}'),
        SSEEvent("message", b"line one\nline two"),
        SSEEvent("message", b"no-space"),
        SSEEvent("message", b"[DONE]"),
    ]


async def test_unterminated_last_line_and_event_still_arrive() -> None:
    assert [line async for line in iter_lines(pieces(b"a\nb\r\nc", 2))] == [b"a", b"b", b"c"]
    assert [e.data async for e in iter_sse(pieces(b"data: x", 3))] == [b"x"]


async def test_an_endless_line_fails_instead_of_growing_without_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(framing, "MAX_LINE_BYTES", 1000)  # a limit, not the code under test
    with pytest.raises(UpstreamUnavailable, match="over 1000 bytes"):
        [line async for line in iter_lines(pieces(b"x" * 5000, 100))]
