"""The end of a drain's grace: a stream still running is told so, with how much it got."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import TEST_KEY, StartGateway


def long_stream(text: str) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content=text)])


async def test_streams_running_at_the_end_of_the_grace_end_with_the_stream_contract(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    simulator.config.tokens_per_second = 10  # 200 tokens: 20 s, far past the grace
    gateway = await start_gateway(server__shutdown_grace_seconds=1.5)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=60) as client:
        stream = client.stream_chat(long_stream("/tokens 200 cut by the drain"))
        received = [await anext(stream) for _ in range(3)]  # type: ignore[call-overload]
        stopping = asyncio.ensure_future(gateway.stop())
        with pytest.raises(AIServiceError) as caught:
            async for chunk in stream:  # type: ignore[attr-defined]
                received.append(chunk)
        await stopping
    error = caught.value
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert error.reason == "STREAM_INTERRUPTED"
    assert error.chunks_delivered == len(received)
    assert error.error_metadata["cause"] == "DRAINING"
    assert "shutting down" in error.message


async def test_a_stream_still_waiting_for_its_first_chunk_ends_draining(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    simulator.config.latency_ms = 30_000  # the first chunk would come far past the grace
    gateway = await start_gateway(server__shutdown_grace_seconds=1.0)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=60) as client:
        stream = client.stream_chat(long_stream("/tokens 5 never started"))
        first = asyncio.ensure_future(anext(stream))  # type: ignore[call-overload]
        for _ in range(1500):  # until the upstream has the request
            if simulator.stats.total_requests:
                break
            await asyncio.sleep(0.02)
        assert simulator.stats.total_requests == 1
        stopping = asyncio.ensure_future(gateway.stop())
        with pytest.raises(AIServiceError) as caught:
            await first
        await stopping
    # Nothing was delivered: the caller may try again elsewhere.
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == "DRAINING"
