"""Limits that must hold over time: the per-deployment queue lets go of calls that gave
up waiting, and a token bucket never holds more than its burst."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from ai_service.errors import DeploymentBusy
from ai_service.limits.buckets import InMemoryRateLimiter
from ai_service.limits.rules import RateRule
from ai_service.resilience import Budget
from ai_service.resilience.concurrency import ConcurrencyLimiter
from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import TEST_KEY, StartGateway, until


def far() -> Budget:
    return Budget(time.monotonic() + 60)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the deployment's queue --------------------------------------------------------------


async def test_a_queued_call_that_timed_out_leaves_the_queue() -> None:
    """Guards: `ConcurrencyLimiter._abandon` not removing a timed-out waiter from the
    queue (`self._waiters.remove(waiter)` dropped): the dead waiter kept counting
    against `max_queue`, so a later call was refused DeploymentBusy with room to spare."""
    limiter = ConcurrencyLimiter("p/m", max_in_flight=1, max_queue=2)
    await limiter.acquire(far())  # the one slot, held
    short = asyncio.create_task(limiter.acquire(Budget(time.monotonic() + 0.05)))
    first = asyncio.create_task(limiter.acquire(far()))
    await until(lambda: limiter.queued == 2, "both calls queue")
    with pytest.raises(DeploymentBusy):
        await short  # its deadline passed while it waited
    assert limiter.queued == 1

    second = asyncio.create_task(limiter.acquire(far()))  # room for it: one waits
    await until(lambda: limiter.queued == 2, "the later call queues")
    assert not second.done()

    admitted: list[str] = []
    first.add_done_callback(lambda _: admitted.append("first"))
    second.add_done_callback(lambda _: admitted.append("second"))
    limiter.release()
    await first
    assert admitted == ["first"] and limiter.queued == 1
    limiter.release()
    await second
    assert admitted == ["first", "second"]
    limiter.release()
    assert (limiter.in_flight, limiter.queued) == (0, 0)
    assert limiter.try_acquire()


async def test_a_queued_call_that_was_cancelled_leaves_the_queue() -> None:
    """Guards: a cancelled waiter left in the queue (the `except CancelledError` branch
    of `ConcurrencyLimiter.acquire` not abandoning it)."""
    limiter = ConcurrencyLimiter("p/m", max_in_flight=1, max_queue=1)
    await limiter.acquire(far())
    leaving = asyncio.create_task(limiter.acquire(far()))
    await until(lambda: limiter.queued == 1, "the call queues")
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert limiter.queued == 0
    staying = asyncio.create_task(limiter.acquire(far()))
    await until(lambda: limiter.queued == 1, "the next call queues")
    limiter.release()
    await staying
    assert (limiter.in_flight, limiter.queued) == (1, 0)


def ask(text: str) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="narrow", messages=[Message(role="user", content=text)])


async def test_after_a_queued_call_times_out_the_gateway_admits_later_calls_in_order(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    """Guards, end to end: a call that gave up waiting for a deployment's slot staying
    in its queue (`_abandon` not removing it): with the queue still full of it, the
    next call was refused RESOURCE_EXHAUSTED instead of waiting its turn."""
    gateway = await start_gateway(
        models=[
            {
                "name": "narrow",
                "deployments": [
                    {
                        "provider": "simulator",
                        "upstream_model": "narrow",
                        "max_concurrency": 1,
                        "max_queue": 2,
                    }
                ],
            }
        ],
        auth={"keys": [{"name": "tester", "key": TEST_KEY}]},
        resilience={"retries": {"max_attempts": 1}},
    )
    (limiter,) = (handle.limiter for handle in gateway.router.deployments)
    simulator.config.tokens_per_second = 5  # the holding stream stays open until closed
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        holder = client.stream_chat(ask("/tokens 1000 holder"))
        await anext(holder)  # it holds the one slot now
        with pytest.raises(AIServiceError) as gave_up:
            await client.chat(ask("impatient"), timeout=0.3)
        await until(lambda: limiter.queued == 0, "the timed-out call left the queue")

        first = asyncio.create_task(client.chat(ask("first")))
        await until(lambda: limiter.queued == 1, "the first call queues")
        second = asyncio.create_task(client.chat(ask("second")))
        await until(lambda: limiter.queued == 2, "the second call queues")
        await holder.aclose()  # the slot goes to the first in line, then the next
        answers = [await first, await second]
    assert gave_up.value.code in (
        grpc.StatusCode.DEADLINE_EXCEEDED,  # the deadline reached it first
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # the gateway gave up waiting first
    )
    assert [a.choices[0].message.content for a in answers] == [
        "You said: first",
        "You said: second",
    ]
    upstream = [r.body["messages"][-1]["content"] for r in simulator.stats.received]
    assert upstream == ["/tokens 1000 holder", "first", "second"]  # never "impatient"
    assert (limiter.in_flight, limiter.queued) == (0, 0)


# -- the token bucket ----------------------------------------------------------------------

RULE = RateRule(per_minute=60, burst=5)  # one token a second, five at most


async def spend_all(limiter: InMemoryRateLimiter, amount: float = 1) -> int:
    taken = 0
    while (await limiter.take("k", amount, RULE)).allowed:
        taken += 1
    return taken


async def test_a_long_idle_bucket_holds_no_more_than_its_burst() -> None:
    """Guards: the refill in `InMemoryRateLimiter._bucket` not capped at the burst
    (`min(burst, …)` dropped): an hour idle let a caller spend 3,600 requests at once."""
    clock = Clock()
    limiter = InMemoryRateLimiter(clock)
    assert await spend_all(limiter) == RULE.burst
    clock.now += 3600
    assert await spend_all(limiter) == RULE.burst
    clock.now += 2  # two seconds: two tokens back
    assert await spend_all(limiter) == 2
    refused = await limiter.take("k", 1, RULE)
    assert not refused.allowed and refused.retry_after == pytest.approx(1.0)
