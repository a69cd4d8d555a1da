"""A stream's record when gRPC's send of a chunk fails under it: the call ended there
(the caller cancelled, or its deadline passed, before gRPC core told the event loop)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import grpc
import pytest

from ai_service.entry.calls import OpenCalls
from ai_service.interceptors.arrival import Arrivals
from ai_service.interceptors.telemetry import TelemetryInterceptor, _observing


class _EndedUnderTheSecondChunk:
    """The part of a grpc.aio context a stream uses, for a call that ends (core-side)
    while its second chunk is being sent: gRPC raises its own error from that send."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.status: grpc.StatusCode | None = None  # an abort's

    async def send_initial_metadata(self, metadata: Any) -> None:
        pass

    async def write(self, message: str) -> None:
        if self.written:
            raise grpc.aio.UsageError("RPC already finished.")
        self.written.append(message)

    def time_remaining(self) -> float | None:
        return None

    def code(self) -> grpc.StatusCode | None:
        return self.status

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


Chunks = Callable[[Any, Any], AsyncGenerator[str, None]]


async def _observed_run(chunks: Chunks, calls: OpenCalls, context: Any) -> None:
    """`chunks` served as the telemetry interceptor serves a stream, on `context`."""
    handler = _observing(
        grpc.stream_stream_rpc_method_handler(chunks),
        TelemetryInterceptor(calls, Arrivals(seconds=1, most=10)),
    )
    await handler.stream_stream(iter(()), context)  # type: ignore[misc]


async def test_a_chunk_whose_send_fails_because_the_call_ended_records_a_cancel() -> None:
    closed: list[bool] = []

    async def chunks(requests: Any, context: Any) -> AsyncGenerator[str, None]:
        try:
            for word in ("one", "two", "three"):
                yield word
        finally:  # the upstream stream's closing
            closed.append(True)

    calls = OpenCalls(())
    call = calls.open("StreamChatCompletion", (), "grpc", streaming=True)
    context = _EndedUnderTheSecondChunk()
    with pytest.raises(grpc.aio.UsageError):  # gRPC's own error goes back to grpc.aio
        await _observed_run(chunks, calls, context)
    assert context.written == ["one"]
    assert closed == [True]
    assert (call.code, call.reason) == (grpc.StatusCode.CANCELLED, "CANCELLED")
    assert calls.count == 0


async def test_an_abort_from_the_stream_keeps_its_status() -> None:
    # grpc.aio's abort raises gRPC's own error too, but not from a chunk's send.
    context = _EndedUnderTheSecondChunk()

    async def chunks(requests: Any, _context: Any) -> AsyncGenerator[str, None]:
        yield "one"
        context.status = grpc.StatusCode.RESOURCE_EXHAUSTED
        raise grpc.aio.AbortError("Locally aborted.")

    calls = OpenCalls(())
    call = calls.open("StreamChatCompletion", (), "grpc", streaming=True)
    with pytest.raises(grpc.aio.AbortError):
        await _observed_run(chunks, calls, context)
    assert call.code is grpc.StatusCode.RESOURCE_EXHAUSTED
