"""A key's `models` list binds every model a call may reach: the one it names, the one a
content rule picks, each fallback, each hedge, and the cached answers of all of them."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from ai_service.simulator import FaultRule, Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import RESTRICTED_KEY, TEST_KEY, StartGateway, single

# The restricted key (tests/conftest.py) may use sim-gpt alone.


def ask(text: str = "hello", **extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model="sim-gpt", messages=[Message(role="user", content=text)], **extra
    )


async def test_a_rule_never_routes_a_key_to_a_model_it_may_not_use(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(
        models=[
            single("sim-gpt", "sim-gpt-1", rules=[{"min_prompt_chars": 20, "model": "m-big"}]),
            single("m-big", "big-1"),
        ]
    )
    padded = "x" * 40
    async with AsyncAIClient(gateway.address, RESTRICTED_KEY, timeout=10) as client:
        assert (await client.chat(ask(padded))).model == "sim-gpt-1"
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        assert (await client.chat(ask(padded))).model == "big-1"  # the rule still applies
    assert simulator.stats.count(model="big-1") == 1


async def test_a_fallback_the_key_may_not_use_is_skipped(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(
        models=[
            single("sim-gpt", "sim-gpt-1", fallbacks=["m-secret"]),
            single("m-secret", "secret-1"),
        ]
    )
    simulator.add_fault(FaultRule("status", model="sim-gpt-1", status=503))
    async with AsyncAIClient(gateway.address, RESTRICTED_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask())
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert simulator.stats.count(model="secret-1") == 0
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        assert (await client.chat(ask())).model == "secret-1"


async def test_a_hedge_never_starts_on_a_model_the_key_may_not_use(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(
        models=[
            single("sim-gpt", "sim-gpt-1", fallbacks=["m-secret"], hedge_after_ms=20),
            single("m-secret", "secret-1"),
        ]
    )
    # The first attempt is slow: a hedge would start on the fallback, which this key
    # may not use; the key waits for its own model instead.
    simulator.add_fault(FaultRule("latency", model="sim-gpt-1", seconds=0.3, times=1))
    async with AsyncAIClient(gateway.address, RESTRICTED_KEY, timeout=10) as client:
        assert (await client.chat(ask())).model == "sim-gpt-1"
    assert simulator.stats.count(model="secret-1") == 0


async def test_a_cached_answer_of_a_model_the_key_may_not_use_is_not_served_to_it(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(
        cache={"enabled": True},
        models=[
            single("sim-gpt", "sim-gpt-1", fallbacks=["m-secret"]),
            single("m-secret", "secret-1"),
        ],
    )
    simulator.add_fault(FaultRule("status", model="sim-gpt-1", status=503))
    request = ask(temperature=0)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        assert (await client.chat(request)).model == "secret-1"  # cached now
    async with AsyncAIClient(gateway.address, RESTRICTED_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(request)
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
