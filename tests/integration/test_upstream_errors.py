"""Upstream failures reach the caller as docs/errors.md's mapping says, never as silence."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from ai_service.simulator import FaultRule, Simulator, plan_reply
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import PROVIDER_SECRET, TEST_ENV, TEST_KEY, StartGateway, until

HELLO = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hello")])
LONG = ChatCompletionRequest(
    model="sim-gpt", messages=[Message(role="user", content="/tokens 40 go")]
)


@pytest.mark.parametrize(
    ("fault", "code", "reason", "attempts"),
    [
        (
            FaultRule("status", status=400, message="bad"),
            "INVALID_ARGUMENT",
            "UPSTREAM_INVALID_REQUEST",
            1,
        ),
        (FaultRule("status", status=422), "INVALID_ARGUMENT", "UPSTREAM_INVALID_REQUEST", 1),
        (FaultRule("status", status=401), "INTERNAL", "UPSTREAM_AUTH", 1),
        (FaultRule("status", status=403), "INTERNAL", "UPSTREAM_AUTH", 1),
        (FaultRule("status", status=404), "NOT_FOUND", "UPSTREAM_MODEL_NOT_FOUND", 1),
        (FaultRule("status", status=408), "DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT", 3),
        (FaultRule("status", status=500), "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", 3),
        (FaultRule("status", status=502), "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", 3),
        (FaultRule("status", status=503), "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", 3),
        (FaultRule("reset"), "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", 3),
        (FaultRule("malformed", after_chunks=0), "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", 3),
        (FaultRule("cut", after_chunks=0), "UNAVAILABLE", "UPSTREAM_UNAVAILABLE", 3),
    ],
    ids=lambda v: f"{v.kind}-{v.status}" if isinstance(v, FaultRule) else str(v),
)
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_upstream_failure_maps_to_the_designed_status(
    client: AsyncAIClient,
    simulator: Simulator,
    fault: FaultRule,
    code: str,
    reason: str,
    attempts: int,
    streamed: bool,
) -> None:
    simulator.add_fault(fault)
    with pytest.raises(AIServiceError) as caught:
        if streamed:
            [c async for c in client.stream_chat(HELLO)]
        else:
            await client.chat(HELLO)
    error = caught.value
    assert error.code.name == code, error
    assert error.reason == reason, error
    assert PROVIDER_SECRET not in str(error)
    # A fault another attempt may fix is retried (max_attempts 3, one deployment);
    # a bad request, a missing model or a refused provider key is not.
    assert simulator.stats.total_requests == attempts
    simulator.clear_faults()
    assert (await client.chat(HELLO)).choices  # and the gateway is fine afterwards


async def test_upstream_message_is_passed_on(client: AsyncAIClient, simulator: Simulator) -> None:
    simulator.add_fault(FaultRule("status", status=400, message="messages too long for model"))
    with pytest.raises(AIServiceError) as caught:
        await client.chat(HELLO)
    assert "messages too long for model" in caught.value.message
    assert "HTTP 400" in caught.value.message


async def test_upstream_429_carries_retry_after_as_retry_info(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    # A Retry-After beyond the call's deadline: no point waiting, the caller learns when.
    simulator.add_fault(FaultRule("status", status=429, retry_after=70))
    with pytest.raises(AIServiceError) as caught:
        await client.chat(HELLO)
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == "UPSTREAM_RATE_LIMITED"
    assert caught.value.retry_after == pytest.approx(70.0)
    assert simulator.stats.total_requests == 1


async def test_stream_cut_mid_way_delivers_what_arrived_then_unavailable_with_the_count(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    simulator.config.tokens_per_second = 200  # events arrive one by one
    simulator.add_fault(FaultRule("cut", after_chunks=6))  # the role event and 5 words
    received = []
    with pytest.raises(AIServiceError) as caught:
        async for chunk in client.stream_chat(LONG):
            received.append(chunk)
    plan = plan_reply(  # the request as OpenAI's reference writes it
        {"model": "sim-gpt-1", "messages": [{"role": "user", "content": "/tokens 40 go"}]}
    )
    text = "".join(c.choices[0].delta.content for c in received)
    assert text == "".join(plan.pieces()[:5])  # exactly what was sent, no duplicated prefix
    assert [c.sequence for c in received] == list(range(len(received)))
    error = caught.value
    assert error.code is grpc.StatusCode.UNAVAILABLE
    assert error.reason == "STREAM_INTERRUPTED"
    assert error.error_metadata["chunks_delivered"] == str(len(received))
    assert error.error_metadata["chars_delivered"] == str(len(text))
    assert error.error_metadata["tokens_delivered_estimate"] == str(-(-len(text) // 4))
    assert f"after {len(received)} chunks" in error.message


async def test_stalled_upstream_ends_deadline_exceeded_at_the_client_deadline(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    simulator.add_fault(FaultRule("stall", seconds=None))  # never answered
    with pytest.raises(AIServiceError) as caught:
        await client.chat(HELLO, timeout=0.5)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    # The gateway gave up too: it closed the request it had upstream.
    await until(lambda: simulator.stats.connections_open == 0, "the stalled request closed")


async def test_stall_without_client_deadline_ends_at_the_default_deadline(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(server={"listen": "127.0.0.1:0", "default_deadline_seconds": 0.5})
    simulator.add_fault(FaultRule("stall", seconds=30))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=None) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(HELLO)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.reason == "DEADLINE_EXCEEDED"


async def test_a_stream_that_outlives_the_default_deadline_gets_a_status(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # The upstream streams as fast as it can and the caller reads along: the gateway's
    # own deadline then nearly always falls while grpc.aio writes a chunk, which once
    # ended the call with no status at all (the caller waited for ever).
    gateway = await start_gateway(server={"listen": "127.0.0.1:0", "default_deadline_seconds": 0.5})
    simulator.config.tokens_per_second = 30_000
    endless = ChatCompletionRequest(
        model="sim-gpt", messages=[Message(role="user", content="/tokens 100000 go")]
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=None) as client:
        for _ in range(3):
            with pytest.raises(AIServiceError) as caught:
                async with asyncio.timeout(10):
                    async for _chunk in client.stream_chat(endless):
                        pass
            assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_stream_whose_upstream_goes_quiet_ends_at_the_deadline_saying_what_came(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # The deadline passes while the gateway waits for the upstream's next chunk: that
    # wait is cut, the upstream stream closed, and the caller told how much it has.
    gateway = await start_gateway(server={"listen": "127.0.0.1:0", "default_deadline_seconds": 1})
    simulator.add_fault(FaultRule("hold", after_chunks=3, seconds=None))
    request = ChatCompletionRequest(
        model="sim-gpt", messages=[Message(role="user", content="/tokens 50 go")]
    )
    received = 0
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=None) as client:
        with pytest.raises(AIServiceError) as caught:
            async with asyncio.timeout(10):
                async for _chunk in client.stream_chat(request):
                    received += 1
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.reason == "STREAM_INTERRUPTED"
    assert caught.value.error_metadata["chunks_delivered"] == str(received)
    assert received > 0
    await until(lambda: simulator.stats.streams_in_flight == 0, "the upstream stream closed")


async def test_unreachable_upstream_is_unavailable(start_gateway: StartGateway) -> None:
    from ai_service.config import parse_config
    from tests.conftest import config_tree, free_port

    dead = f"http://127.0.0.1:{free_port()}"
    gateway = await start_gateway(parse_config(config_tree(dead), env=TEST_ENV))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=5) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(HELLO)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert "connection failed" in caught.value.message


async def test_gateway_unavailable_tells_clients_not_to_retry_on_top(
    client: AsyncAIClient, simulator: Simulator
) -> None:
    # The client's default service config retries UNAVAILABLE; the gateway already
    # retried upstream within its budget, so its status carries gRPC's retry pushback
    # and the client does not multiply the attempts.
    simulator.add_fault(FaultRule("status", status=503))
    with pytest.raises(AIServiceError) as caught:
        await client.chat(HELLO)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert simulator.stats.total_requests == 3  # the gateway's own max_attempts, no more
