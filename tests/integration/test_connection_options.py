"""Life behind a load balancer: max_connection_age rebalances connections, its grace keeps
streams whole (and a grace shorter than a stream cuts it: the setting is real); a backlog
past max_pending_calls is refused by gRPC core before it reaches the gateway."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from ai_service.simulator import Simulator
from ai_service_client import (
    AsyncAIClient,
    ChatCompletionRequest,
    Message,
    UnavailableError,
)
from ai_service_protos import ai_service_pb2, ai_service_pb2_grpc
from tests.conftest import TEST_KEY, StartGateway

LONG = ChatCompletionRequest(
    model="sim-gpt", messages=[Message(role="user", content="/tokens 30 x")]
)


async def test_a_stream_outliving_the_connection_age_completes_within_the_grace(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    simulator.config.tokens_per_second = 20  # 1.5 s of stream
    gateway = await start_gateway(
        server={
            "listen": "127.0.0.1:0",
            "max_connection_age_seconds": 0.5,
            "max_connection_age_grace_seconds": 10,
        }
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        chunks = [c async for c in client.stream_chat(LONG)]
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert chunks[-1].usage.completion_tokens == 30
        # The aged connection was closed gracefully; the channel simply reconnects.
        assert (await client.chat(LONG)).choices


async def test_a_grace_shorter_than_the_stream_cuts_it(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    simulator.config.tokens_per_second = 10  # 3 s of stream
    gateway = await start_gateway(
        server={
            "listen": "127.0.0.1:0",
            "max_connection_age_seconds": 0.5,
            "max_connection_age_grace_seconds": 0.5,
        }
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(UnavailableError):
            [c async for c in client.stream_chat(LONG)]


def _call_from_another_thread(channel: grpc.Channel) -> grpc.StatusCode:
    """One ChatCompletion on a plain (sync) channel: its own threads, not the test's loop."""
    stub = ai_service_pb2_grpc.AIServiceStub(channel)
    try:
        stub.ChatCompletion(
            ai_service_pb2.ChatCompletionRequest(
                model="sim-gpt", messages=[ai_service_pb2.Message(role="user", content="hi")]
            ),
            metadata=(("authorization", f"Bearer {TEST_KEY}"),),
            timeout=10,
        )
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


async def _flood_while_busy(address: str, calls: int) -> list[grpc.StatusCode]:
    """`calls` calls arrive while the gateway's loop is busy (blocked here), so they wait
    in gRPC core's backlog, as they do when the gateway is saturated."""
    with grpc.insecure_channel(address) as channel, ThreadPoolExecutor(calls) as pool:
        grpc.channel_ready_future(channel).result(timeout=10)  # connected before the flood
        sent = [pool.submit(_call_from_another_thread, channel) for _ in range(calls)]
        time.sleep(1.5)  # noqa: ASYNC251 (the point: the loop cannot take calls meanwhile)
        return [await asyncio.wrap_future(call) for call in sent]


@pytest.mark.parametrize(("max_pending", "refused_at_least"), [(1000, 0), (2, 24 - 1 - 6)])
async def test_a_backlog_past_max_pending_calls_is_refused_at_once(
    start_gateway: StartGateway, max_pending: int, refused_at_least: int
) -> None:
    gateway = await start_gateway(
        server={"listen": "127.0.0.1:0", "max_pending_calls": max_pending}
    )
    codes = await _flood_while_busy(gateway.address, 24)
    refused = codes.count(grpc.StatusCode.CANCELLED)
    # One call may already be taken up; past 3 x max_pending, every one is refused.
    assert refused >= refused_at_least
    assert codes.count(grpc.StatusCode.OK) == len(codes) - refused
    if max_pending == 1000:
        assert refused == 0
