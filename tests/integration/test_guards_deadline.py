"""Deadlines as the gateway keeps them, observed on the gateway's side and the upstream's.

The client's own deadline ends its call whatever the gateway does, so these tests look
elsewhere: at the simulator (how many requests reached it, and whether the connection
of the one in progress was closed under it) and at the gateway's audit record (the
status and reason it recorded, and how many attempts it made). They assert events,
never how long anything took.

gRPC also enforces a client's deadline on the server: when it passes, grpc.aio cancels
the call's handler. So the gateway's own budget shows in what it decides before the
deadline (a wait that would outlive it is not started), and in the deadline it applies
when the client sends none (`server.default_deadline_seconds`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from ai_service.config import parse_config
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import TEST_ENV, TEST_KEY, StartGateway, config_tree, until


def audit_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def the_audit_record(path: Path) -> dict[str, Any]:
    """The one call's record, once the audit writer has appended it."""
    await until(lambda: bool(audit_records(path)), "the call's audit record")
    (record,) = audit_records(path)
    return record


def gateway_tree(
    simulator: Simulator, audit: Path, *, default_deadline: float = 300, read_timeout: float = 60
) -> dict[str, Any]:
    tree = config_tree(simulator.base_url)
    tree["server"]["default_deadline_seconds"] = default_deadline
    tree["providers"][0]["timeouts"] = {"read": read_timeout}
    tree["observability"] = {"metrics": {"enabled": False}, "audit": {"path": str(audit)}}
    tree["cache"] = {"enabled": True}
    tree["resilience"] = {
        # Attempts enough that they never run out first, spent as soon as they may be.
        "retries": {"max_attempts": 10, "backoff_base_ms": 0, "backoff_max_ms": 0},
        "circuit_breaker": {"consecutive_failures": 1000, "min_calls": 1000},
    }
    return tree


def fail_twice_then_stall(simulator: Simulator) -> None:
    """Two quick retryable failures, then a request that is never answered: only its
    client can end it, by closing the connection."""
    simulator.add_fault(FaultRule("status", status=503, times=2))
    simulator.add_fault(FaultRule("stall", seconds=None))


def hello(*, cacheable: bool = False) -> ChatCompletionRequest:
    request = ChatCompletionRequest(
        model="sim-gpt", messages=[Message(role="user", content="hello")]
    )
    if cacheable:  # served through the single flight, in a task of its own
        request.seed = 1
    return request


async def test_the_gateways_own_deadline_ends_the_call_and_closes_the_upstream_request(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    """Guards: the gateway not keeping its deadline (e.g. `Budget.for_call` given a huge
    one, or `budget.bound` not cancelling at it). The client sets no deadline, so only
    the gateway's can end the call: without it the stalled attempt ran into the read
    timeout and the gateway went on retrying until its attempts ran out (UPSTREAM_TIMEOUT
    recorded, ten requests upstream)."""
    audit = tmp_path / "audit.jsonl"
    tree = gateway_tree(simulator, audit, default_deadline=2.0, read_timeout=3.0)
    gateway = await start_gateway(parse_config(tree, env=TEST_ENV))
    fail_twice_then_stall(simulator)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=None) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(hello())
    # The caller had no deadline: this status is the gateway's own.
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.reason == "DEADLINE_EXCEEDED"

    record = await the_audit_record(audit)
    assert (record["status"], record["reason"]) == ("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED")
    # The stalled request's connection is closed, and by the gateway: the simulator
    # never ends a stall itself.
    await until(lambda: simulator.stats.connections_open == 0, "the upstream request closed")
    # Every attempt the gateway made reached the upstream, and none came after.
    assert simulator.stats.total_requests == record["attempts"] == 3


@pytest.mark.parametrize("cacheable", [False, True], ids=["direct", "single-flight"])
async def test_at_the_client_deadline_attempts_stop_and_the_upstream_request_is_closed(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path, cacheable: bool
) -> None:
    """Guards: the call's upstream work outliving the call at its client's deadline —
    a single flight not cancelled when its last caller has gone (`SingleFlight.run`
    without `flight.task.cancel()`), or the dispatch shielded from the call's
    cancellation: the stalled request stayed open upstream and the retries went on.
    Also that the gateway records the call as DEADLINE_EXCEEDED, not CANCELLED.

    (With the gateway's budget ignored this still passes: gRPC cancels the handler at
    the client's deadline. The tests before and after this one fail then.)"""
    audit = tmp_path / "audit.jsonl"
    gateway = await start_gateway(parse_config(gateway_tree(simulator, audit), env=TEST_ENV))
    fail_twice_then_stall(simulator)
    async with AsyncAIClient(gateway.address, TEST_KEY) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(hello(cacheable=cacheable), timeout=2.0)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED

    record = await the_audit_record(audit)
    assert (record["status"], record["reason"]) == ("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED")
    await until(lambda: simulator.stats.connections_open == 0, "the upstream request closed")
    assert simulator.stats.total_requests == record["attempts"] == 3


async def test_a_retry_wait_that_would_outlive_the_client_deadline_is_not_started(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    """Guards: the gateway not taking its deadline from the client's (e.g. `Budget.for_call`
    given a huge deadline, or the client's `time_remaining()` left out for the 300 s
    default): it then slept through a Retry-After longer than the client had left, and
    the call ended DEADLINE_EXCEEDED instead of telling the caller at once when to come
    back. The client's deadline is shorter than the Retry-After, which is far shorter
    than the gateway's default deadline."""
    audit = tmp_path / "audit.jsonl"
    gateway = await start_gateway(parse_config(gateway_tree(simulator, audit), env=TEST_ENV))
    simulator.add_fault(FaultRule("status", status=429, retry_after=5))
    async with AsyncAIClient(gateway.address, TEST_KEY) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(hello(), timeout=2.0)
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.reason == "UPSTREAM_RATE_LIMITED"
    assert caught.value.retry_after == pytest.approx(5.0)

    record = await the_audit_record(audit)
    assert (record["status"], record["reason"]) == ("RESOURCE_EXHAUSTED", "UPSTREAM_RATE_LIMITED")
    assert simulator.stats.total_requests == record["attempts"] == 1
