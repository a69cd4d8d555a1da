"""Routing and resilience through the real gateway against the simulator's faults.

Two deployments of one model live on the same simulator under different upstream
model names (`ha-a`, `ha-b`), so a fault can hit one and not the other.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ai_service.resilience import CircuitState
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import (
    AIServiceError,
    AsyncAIClient,
    ChatCompletionRequest,
    DeadlineExceededError,
    Message,
    UnavailableError,
)
from tests.conftest import PROVIDER_KEY_REF, TEST_KEY, StartGateway, single, until


def ask(model: str, text: str = "hello") -> ChatCompletionRequest:
    return ChatCompletionRequest(model=model, messages=[Message(role="user", content=text)])


def providers(simulator: Simulator, read_timeout: float = 60) -> list[dict[str, Any]]:
    return [
        {
            "name": "simulator",
            "base_url": f"{simulator.base_url}/v1",
            "api_key": PROVIDER_KEY_REF,
            "timeouts": {"read": read_timeout},
        }
    ]


def ha_model(name: str = "ha", weight_a: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "deployments": [
            {"provider": "simulator", "upstream_model": "ha-a", "weight": weight_a},
            {"provider": "simulator", "upstream_model": "ha-b"},
        ],
        **extra,
    }


async def start(
    start_gateway: StartGateway,
    simulator: Simulator,
    models: list[dict[str, Any]],
    read_timeout: float = 60,
    **resilience: Any,
) -> Gateway:
    return await start_gateway(
        providers=providers(simulator, read_timeout),
        models=models,
        auth={"keys": [{"name": "tester", "key": TEST_KEY}]},
        resilience=resilience,
    )


@pytest.mark.parametrize(
    "fault",
    [
        FaultRule("status", model="ha-a", status=503),
        FaultRule("status", model="ha-a", status=500),
        FaultRule("reset", model="ha-a"),
        FaultRule("stall", model="ha-a", seconds=30),
        # A stream cut after its role chunk has delivered nothing yet: it fails over.
        FaultRule("cut", model="ha-a", after_chunks=1),
    ],
    ids=["503", "500", "reset", "stall", "cut-after-role"],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_failure_on_one_deployment_is_answered_by_the_other(
    start_gateway: StartGateway, simulator: Simulator, fault: FaultRule, streamed: bool
) -> None:
    # weight_a huge: ha-a is (almost always) tried first, so the failover is exercised.
    gateway = await start(start_gateway, simulator, [ha_model(weight_a=1e6)], read_timeout=0.3)
    simulator.add_fault(fault)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        for _ in range(3):
            if streamed:
                chunks = [c async for c in client.stream_chat(ask("ha"))]
                text = "".join(c.choices[0].delta.content for c in chunks)
                deployment = chunks[0].deployment
            else:
                response = await client.chat(ask("ha"))
                text, deployment = response.choices[0].message.content, response.deployment
            assert text == "You said: hello"
            assert deployment == "simulator/ha-b"
    assert simulator.stats.count(model="ha-a") == 3
    assert simulator.stats.count(model="ha-b") == 3


async def test_429_retry_after_is_honoured_then_the_call_succeeds(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start(start_gateway, simulator, [single("one", "solo")])
    simulator.add_fault(FaultRule("status", status=429, retry_after=0.4, times=1))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        started = time.monotonic()
        response = await client.chat(ask("one"))
        waited = time.monotonic() - started
    assert response.choices[0].message.content == "You said: hello"
    assert waited >= 0.4
    assert simulator.stats.count(model="solo") == 2


async def test_bad_request_is_not_retried(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start(start_gateway, simulator, [ha_model()])
    simulator.add_fault(FaultRule("status", status=400))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask("ha"))
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert simulator.stats.total_requests == 1


async def test_short_client_deadline_ends_on_time_with_no_retry_past_it(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start(start_gateway, simulator, [ha_model()])
    simulator.config.latency_ms = 3000
    async with AsyncAIClient(gateway.address, TEST_KEY) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask("ha"), timeout=0.4)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    # The gateway closed the request it had upstream, and tried nothing after it.
    await until(lambda: simulator.stats.connections_open == 0, "the upstream request closed")
    assert simulator.stats.total_requests == 1


async def test_circuit_opens_skips_the_deployment_half_opens_and_closes(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start(
        start_gateway,
        simulator,
        [ha_model(weight_a=1e6)],
        circuit_breaker={"consecutive_failures": 3, "open_seconds": 0.5},
    )
    breaker = next(h.breaker for h in gateway.router.deployments if h.name == "simulator/ha-a")
    simulator.add_fault(FaultRule("status", model="ha-a", status=503))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        for _ in range(3):
            assert (await client.chat(ask("ha"))).deployment == "simulator/ha-b"
        assert breaker.state is CircuitState.OPEN
        for _ in range(5):  # skipped while open: no more calls reach ha-a
            assert (await client.chat(ask("ha"))).deployment == "simulator/ha-b"
        assert simulator.stats.count(model="ha-a") == 3

        await until(lambda: breaker.state is CircuitState.HALF_OPEN, "the cool-down ends")
        simulator.clear_faults()
        # The probe goes to ha-a (it is first by weight), succeeds, and closes the circuit.
        assert (await client.chat(ask("ha"))).deployment == "simulator/ha-a"
        assert breaker.state is CircuitState.CLOSED


async def test_a_failed_probe_opens_the_circuit_again(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start(
        start_gateway,
        simulator,
        [ha_model(weight_a=1e6)],
        circuit_breaker={"consecutive_failures": 2, "open_seconds": 0.3},
    )
    breaker = next(h.breaker for h in gateway.router.deployments if h.name == "simulator/ha-a")
    simulator.add_fault(FaultRule("status", model="ha-a", status=503))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        for _ in range(2):
            await client.chat(ask("ha"))
        assert breaker.state is CircuitState.OPEN
        await until(lambda: breaker.state is CircuitState.HALF_OPEN, "the cool-down ends")
        await client.chat(ask("ha"))  # the probe fails, ha-b answers
    assert breaker.state is CircuitState.OPEN
    assert simulator.stats.count(model="ha-a") == 3


async def test_model_health_follows_the_circuits(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start(
        start_gateway,
        simulator,
        [single("fragile", "frag"), single("sturdy", "sturdy")],
        circuit_breaker={"consecutive_failures": 2, "open_seconds": 0.5},
    )
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def status(service: str) -> int:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            return int(reply.status)

        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        assert await status("fragile") == serving
        watch = health.Watch(health_pb2.HealthCheckRequest(service="fragile"))
        seen = [(await watch.read()).status]

        simulator.add_fault(FaultRule("status", model="frag", status=503))
        async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
            with pytest.raises(UnavailableError):
                await client.chat(ask("fragile"))  # three attempts: the circuit opens
            seen.append((await asyncio.wait_for(watch.read(), 2)).status)
            assert await status("fragile") == not_serving
            assert await status("sturdy") == serving
            with pytest.raises(AIServiceError) as caught:
                await client.chat(ask("fragile"))
            assert caught.value.code is grpc.StatusCode.UNAVAILABLE
            assert caught.value.reason == "NO_HEALTHY_DEPLOYMENT"

            # After the cool-down the circuit is half-open: the model is usable again.
            seen.append((await asyncio.wait_for(watch.read(), 2)).status)
            assert await status("fragile") == serving
        watch.cancel()
    assert seen == [serving, not_serving, serving]


async def test_concurrency_limit_queues_then_refuses(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start(
        start_gateway,
        simulator,
        [
            {
                "name": "narrow",
                "deployments": [
                    {
                        "provider": "simulator",
                        "upstream_model": "narrow",
                        "max_concurrency": 2,
                        "max_queue": 1,
                    }
                ],
            }
        ],
        retries={"max_attempts": 1},
    )
    simulator.config.latency_ms = 2000
    (limiter,) = (handle.limiter for handle in gateway.router.deployments)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        held = [asyncio.create_task(client.chat(ask("narrow"))) for _ in range(3)]
        await until(
            lambda: (limiter.in_flight, limiter.queued) == (2, 1), "two in flight, one waiting"
        )
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask("narrow"))
        answers = await asyncio.gather(*held)
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == "DEPLOYMENT_BUSY"
    assert "at its limit of 2 calls in flight with 1 waiting" in str(caught.value)  # not queued
    assert all(a.choices[0].message.content == "You said: hello" for a in answers)
    assert simulator.stats.count(model="narrow") == 3


async def test_wait_for_a_slot_past_the_deadline_is_refused(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start(
        start_gateway,
        simulator,
        [
            {
                "name": "narrow",
                "deployments": [
                    {"provider": "simulator", "upstream_model": "narrow", "max_concurrency": 1}
                ],
            }
        ],
        retries={"max_attempts": 1},
    )
    simulator.config.latency_ms = 1000
    (limiter,) = (handle.limiter for handle in gateway.router.deployments)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        held = asyncio.create_task(client.chat(ask("narrow")))
        await until(lambda: limiter.in_flight == 1, "the first call holds the slot")
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask("narrow"), timeout=0.3)
        await held
    assert caught.value.code in (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


async def test_fallback_model_answers_when_the_primary_fails(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start(
        start_gateway,
        simulator,
        [single("primary", "prim", fallbacks=["backup"]), single("backup", "back")],
    )
    simulator.add_fault(FaultRule("status", model="prim", status=503))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        response = await client.chat(ask("primary"))
    assert response.deployment == "simulator/back"
    assert response.model == "back"


async def test_content_rule_routes_long_prompts_to_another_model(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start(
        start_gateway,
        simulator,
        [
            single("auto", "short-ctx", rules=[{"min_prompt_chars": 40, "model": "long"}]),
            single("long", "long-ctx"),
        ],
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        assert (await client.chat(ask("auto", "short"))).model == "short-ctx"
        assert (await client.chat(ask("auto", "x" * 40))).model == "long-ctx"


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_hedging_answers_from_the_second_deployment_and_cancels_the_first(
    start_gateway: StartGateway, simulator: Simulator, streamed: bool
) -> None:
    gateway = await start(start_gateway, simulator, [ha_model(weight_a=1e6, hedge_after_ms=100)])
    # ha-a never answers: the call ends only if the first answer wins without waiting.
    simulator.add_fault(FaultRule("stall", model="ha-a", seconds=None))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        if streamed:
            chunks = [c async for c in client.stream_chat(ask("ha"))]
            deployment = chunks[0].deployment
        else:
            deployment = (await client.chat(ask("ha"))).deployment
    assert deployment == "simulator/ha-b"
    # The slow attempt was cancelled: its request closed (ha-b's connection may stay in
    # the pool), nothing in flight.
    await until(lambda: simulator.stats.connections_open <= 1, "the slow request closed")
    handles = {h.name: h for h in gateway.router.deployments}
    assert handles["simulator/ha-a"].limiter.in_flight == 0
    assert handles["simulator/ha-b"].limiter.in_flight == 0


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_a_lost_hedge_counts_an_attempt_per_racer(
    start_gateway: StartGateway, simulator: Simulator, streamed: bool
) -> None:
    gateway = await start(
        start_gateway,
        simulator,
        [ha_model(weight_a=1e6, hedge_after_ms=50)],
        read_timeout=0.3,
        retries={"max_attempts": 2},
    )
    simulator.add_fault(FaultRule("stall", model="ha-a", seconds=5))  # slow, then times out
    simulator.add_fault(FaultRule("status", model="ha-b", status=503))  # the hedge fails fast
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(DeadlineExceededError):
            if streamed:
                [c async for c in client.stream_chat(ask("ha"))]
            else:
                await client.chat(ask("ha"))
    # Two attempts allowed, two racers ran: no third request to the failed hedge.
    assert simulator.stats.total_requests == 2


async def test_chaos_every_call_succeeds_and_retries_stay_within_budget(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start(start_gateway, simulator, [ha_model()])
    simulator.config.fault_seed = 30
    simulator.add_fault(FaultRule("status", model="ha-a", status=503, probability=0.3))
    calls = 1000
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=20) as client:
        semaphore = asyncio.Semaphore(25)

        async def one() -> str:
            async with semaphore:
                return (await client.chat(ask("ha"))).choices[0].message.content

        answers = await asyncio.gather(*(one() for _ in range(calls)))
    assert answers == ["You said: hello"] * calls
    budget = gateway.dispatcher.retry_budget
    assert budget.denied == 0
    assert 0 < budget.retries <= 0.2 * calls + 10  # the ratio plus the initial allowance
    assert simulator.stats.total_requests == calls + budget.retries


async def test_a_fallback_is_not_asked_for_more_than_its_own_cap(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start(
        start_gateway,
        simulator,
        [
            single("big", "big-1", fallbacks=["capped"]),
            single("capped", "capped-1", max_output_tokens=50),
        ],
        retries={"max_attempts": 2},
    )
    simulator.add_fault(FaultRule("status", model="big-1", status=503))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        asked = ask("big")
        asked.max_tokens = 500  # within big's (no cap), above capped's
        with pytest.raises(AIServiceError) as caught:
            await client.chat(asked)
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE  # big's outage, not capped
        asked.max_tokens = 40
        assert (await client.chat(asked)).deployment == "simulator/capped-1"
    assert simulator.stats.count(model="capped-1") == 1
