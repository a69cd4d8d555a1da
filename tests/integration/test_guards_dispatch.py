"""Dispatch stops retrying once the process-wide retry budget is spent.

The simulator counts the requests it received: that is the number of upstream
attempts, whatever the gateway believes it did.
"""

from __future__ import annotations

import grpc
import pytest

from ai_service.simulator import FaultRule, Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import TEST_KEY, StartGateway

HELLO = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hello")])
MAX_ATTEMPTS = 20


async def test_no_retry_once_the_retry_budget_is_exhausted(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    """Guards: dispatch retrying when `RetryBudget.try_spend()` says no (the result of
    `try_spend` ignored in `Dispatcher._before_retry`, or `try_spend` always granting),
    which let every call make `max_attempts` attempts during an outage."""
    gateway = await start_gateway(
        resilience={
            # Calls earn no retries and time refills none: only the initial allowance.
            "retries": {
                "max_attempts": MAX_ATTEMPTS,
                "backoff_base_ms": 0,
                "backoff_max_ms": 0,
                "budget_ratio": 0,
                "budget_min_per_second": 0,
            },
            # The breaker must not be what stops the attempts.
            "circuit_breaker": {"consecutive_failures": 1000, "min_calls": 1000},
        }
    )
    budget = gateway.dispatcher.retry_budget
    simulator.add_fault(FaultRule("status", status=503))  # every attempt fails, retryably
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as first:
            await client.chat(HELLO)
        # The first call spends the whole allowance and stops short of max_attempts.
        assert 1 < simulator.stats.total_requests < MAX_ATTEMPTS
        assert simulator.stats.total_requests == 1 + budget.retries
        assert budget.denied == 1

        simulator.reset()
        simulator.add_fault(FaultRule("status", status=503))
        with pytest.raises(AIServiceError) as second:
            await client.chat(HELLO)
    # The budget is empty: the second call makes its one attempt and no retry.
    assert simulator.stats.total_requests == 1
    assert budget.denied == 2
    for caught in (first, second):
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        assert caught.value.reason == "UPSTREAM_UNAVAILABLE"
