"""SSE and line framing over bodies that arrive in arbitrary pieces."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ai_service.errors import UpstreamUnavailable
from ai_service.providers import framing
from ai_service.providers.framing import SSEEvent, iter_line_batches, iter_sse_batches


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def sse_events(body: bytes, size: int) -> list[SSEEvent]:
    return [event async for batch in iter_sse_batches(pieces(body, size)) for event in batch]


async def lines(body: bytes, size: int) -> list[bytes]:
    return [line async for batch in iter_line_batches(pieces(body, size)) for line in batch]


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
    events = await sse_events(STREAM, size)
    assert events == [
        SSEEvent("message", b'{"a": 1}'),
        SSEEvent("message_start", b'{"b": 2}'),
        SSEEvent("message", b"line one\nline two"),
        SSEEvent("message", b"no-space"),
        SSEEvent("message", b"[DONE]"),
    ]


async def test_a_leading_byte_order_mark_is_dropped_as_the_spec_says() -> None:
    assert await sse_events(b"\xef\xbb\xbf" + STREAM, 64) == await sse_events(STREAM, 64)
    # Kept, it would hide the first field's name.
    first = b"\xef\xbb\xbfevent: e\ndata: x\n\n"
    assert await sse_events(first, 64) == [SSEEvent("e", b"x")]
    # Only at the very start: later it is data, even at the start of a later piece.
    assert [e.data for e in await sse_events(b"data: \xef\xbb\xbfx\n\n", 64)] == [b"\xef\xbb\xbfx"]
    assert [e.data for e in await sse_events(b"data: \xef\xbb\xbfx\n\n", 6)] == [b"\xef\xbb\xbfx"]
    twice = b"\xef\xbb\xbfdata: \xef\xbb\xbfx\n\n"
    assert [e.data for e in await sse_events(twice, 9)] == [b"\xef\xbb\xbfx"]


async def test_fields_other_than_data_and_event_are_ignored_and_names_are_case_sensitive() -> None:
    body = b"event: e\nid: 7\nretry: 10\nData: shouted\nbar: baz\ndata: x\n\n"
    assert await sse_events(body, 64) == [SSEEvent("e", b"x")]


async def test_unterminated_last_line_and_event_still_arrive() -> None:
    assert await lines(b"a\nb\r\nc", 2) == [b"a", b"b", b"c"]
    assert [e.data for e in await sse_events(b"data: x", 3)] == [b"x"]


async def test_an_endless_line_fails_instead_of_growing_without_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(framing, "MAX_LINE_BYTES", 1000)  # a limit, not the code under test
    with pytest.raises(UpstreamUnavailable, match="over 1000 bytes"):
        await lines(b"x" * 5000, 100)


async def test_a_read_yields_everything_it_completed_in_one_batch() -> None:
    body = b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4"
    batches = [batch async for batch in iter_sse_batches(pieces(body, 9))]
    assert [[e.data for e in batch] for batch in batches] == [[b"1"], [b"2"], [b"3"], [b"4"]]
    batches = [batch async for batch in iter_sse_batches(pieces(body, 1000))]
    assert [[e.data for e in batch] for batch in batches] == [[b"1", b"2", b"3"], [b"4"]]


async def test_a_line_may_be_4_mib_and_no_longer() -> None:
    longest = b"x" * (4 * 1024 * 1024)
    assert await lines(longest + b"\nnext\n", 1024 * 1024) == [longest, b"next"]
    with pytest.raises(UpstreamUnavailable, match="over 4194304 bytes"):
        await lines(longest + b"x", 1024 * 1024)
