"""Health and dispatch agree on whether a model can be served; a 429 is a cool-down.

Two simulators: `primary` serves the model `main`, `backup` serves the model `spare`,
which is `main`'s fallback. A fault on one simulator leaves the other untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator, SimulatorConfig
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import PROVIDER_KEY_REF, PROVIDER_SECRET, TEST_KEY, StartGateway

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def ask(model: str = "main", text: str = "hello") -> ChatCompletionRequest:
    return ChatCompletionRequest(model=model, messages=[Message(role="user", content=text)])


@pytest.fixture
async def backup() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(api_key=PROVIDER_SECRET)) as sim:
        yield sim


async def start(
    start_gateway: StartGateway,
    primary: Simulator,
    backup: Simulator,
    *,
    fallbacks: bool = True,
    **circuit_breaker: Any,
) -> Gateway:
    return await start_gateway(
        providers=[
            {"name": "primary", "base_url": f"{primary.base_url}/v1", "api_key": PROVIDER_KEY_REF},
            {"name": "backup", "base_url": f"{backup.base_url}/v1", "api_key": PROVIDER_KEY_REF},
        ],
        models=[
            {
                "name": "main",
                "provider": "primary",
                "upstream_model": "main-1",
                "fallbacks": ["spare"] if fallbacks else [],
            },
            {"name": "spare", "provider": "backup", "upstream_model": "spare-1"},
        ],
        auth={"keys": [{"name": "tester", "key": TEST_KEY}]},
        resilience={"circuit_breaker": {"consecutive_failures": 2, **circuit_breaker}},
    )


async def health_of(gateway: Gateway, model: str) -> int:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=model)
        )
    return int(reply.status)


async def wait_health(gateway: Gateway, model: str, status: int) -> None:
    """Until the model's health reads `status` (published a loop turn after the change)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while (seen := await health_of(gateway, model)) != status:
        assert loop.time() < deadline, f"{model} stays {seen}, never {status}"
        await asyncio.sleep(0.02)


# --- 13: one definition of "this model can be served" ---------------------------------------


async def test_a_model_whose_fallback_serves_is_serving(
    start_gateway: StartGateway, simulator: Simulator, backup: Simulator
) -> None:
    gateway = await start(start_gateway, simulator, backup, open_seconds=60)
    simulator.add_fault(FaultRule("status", status=503))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10, service_config="") as client:
        for _ in range(4):  # main's own deployment fails: its circuit opens
            assert (await client.chat(ask())).deployment == "backup/spare-1"
        # A balancer that drains on NOT_SERVING must not drain what serves every call.
        assert await health_of(gateway, "main") == SERVING

        backup.add_fault(FaultRule("status", status=503))
        for _ in range(2):  # now the fallback fails too: its circuit opens
            with pytest.raises(AIServiceError):
                await client.chat(ask())
        await wait_health(gateway, "main", NOT_SERVING)
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask())
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == "NO_HEALTHY_DEPLOYMENT"


async def test_calls_during_a_long_probe_stream_are_served_once_it_answers(
    start_gateway: StartGateway, simulator: Simulator, backup: Simulator
) -> None:
    """A half-open circuit's probe that is a long stream closes the circuit once it
    answers, not when it ends; until then the model is NOT_SERVING, as calls are refused."""
    gateway = await start(start_gateway, simulator, backup, fallbacks=False, open_seconds=0.3)
    simulator.add_fault(FaultRule("status", status=503, times=2))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=30, service_config="") as client:
        for _ in range(2):
            with pytest.raises(AIServiceError):
                await client.chat(ask())
        await wait_health(gateway, "main", NOT_SERVING)  # open
        await wait_health(gateway, "main", SERVING)  # cooled down: half-open
        simulator.config.tokens_per_second = 10
        simulator.config.latency_ms = 300
        probe = client.stream_chat(ask(text="/tokens 40"))  # four seconds of stream
        first = asyncio.ensure_future(anext(aiter(probe)))
        await wait_health(gateway, "main", NOT_SERVING)  # the probe is out: nothing else
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask())
        assert caught.value.reason == "NO_HEALTHY_DEPLOYMENT"
        await first  # the probe answers
        await wait_health(gateway, "main", SERVING)
        simulator.config.tokens_per_second = 0
        simulator.config.latency_ms = 0
        answers = await asyncio.gather(*(client.chat(ask()) for _ in range(5)))
        assert {a.deployment for a in answers} == {"primary/main-1"}
        rest = [chunk async for chunk in probe]
    assert rest[-1].choices[0].finish_reason == "stop"


# --- 14: a 429 cools its deployment down for its Retry-After -------------------------------


async def test_a_deployment_that_answered_429_is_skipped_until_its_retry_after(
    start_gateway: StartGateway, simulator: Simulator, backup: Simulator
) -> None:
    gateway = await start(start_gateway, simulator, backup)
    simulator.add_fault(FaultRule("status", status=429, retry_after=1, times=1))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10, service_config="") as client:
        assert (await client.chat(ask())).deployment == "backup/spare-1"
        for _ in range(10):  # within the second: the fallback first, main-1 not asked
            assert (await client.chat(ask())).deployment == "backup/spare-1"
        assert simulator.stats.count(model="main-1") == 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while (await client.chat(ask())).deployment != "primary/main-1":  # it has passed
            assert loop.time() < deadline, "main-1 never asked again"
            await asyncio.sleep(0.05)


async def test_with_nothing_else_to_ask_a_cooling_deployment_is_refused_without_a_call(
    start_gateway: StartGateway, simulator: Simulator, backup: Simulator
) -> None:
    gateway = await start(start_gateway, simulator, backup, fallbacks=False)
    simulator.add_fault(FaultRule("status", status=429, retry_after=3, times=1))
    async with AsyncAIClient(gateway.address, TEST_KEY, service_config="") as client:
        with pytest.raises(AIServiceError) as first:
            await client.chat(ask(), timeout=1)  # too short to wait out the Retry-After
        assert first.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask(), timeout=10)
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == "UPSTREAM_RATE_LIMITED"
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 3
    assert simulator.stats.count(model="main-1") == 1  # the refusal cost no upstream call
    assert await health_of(gateway, "main") == SERVING  # rate-limited, not broken
