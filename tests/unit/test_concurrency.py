"""A deployment's concurrency limit: slots, the queue behind them, and how a wait ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import pytest

from ai_service.errors import DeploymentBusy
from ai_service.resilience import Budget, ConcurrencyLimiter
from tests.clock import ManualClock, in_virtual_time


def seconds(n: float, clock: Callable[[], float] = time.monotonic) -> Budget:
    """A budget of `n` seconds on `clock` (a virtual loop's, for the waits it times)."""
    return Budget(clock() + n, clock)


async def turn() -> None:
    """Let every task that can run, run."""
    for _ in range(3):
        await asyncio.sleep(0)


def test_slots_are_taken_at_once_up_to_the_limit() -> None:
    limiter = ConcurrencyLimiter("d", max_in_flight=2, max_queue=0)
    assert limiter.try_acquire() and limiter.try_acquire()
    assert not limiter.try_acquire()
    assert (limiter.in_flight, limiter.queued) == (2, 0)
    limiter.release()
    assert limiter.in_flight == 1
    assert limiter.try_acquire()


def test_a_full_queue_refuses_at_once_naming_the_deployment() -> None:
    async def main(clock: ManualClock) -> None:
        limiter = ConcurrencyLimiter("p/m", max_in_flight=1, max_queue=1)
        await limiter.acquire(seconds(60, clock))
        waiting = asyncio.ensure_future(limiter.acquire(seconds(60, clock)))
        await turn()
        assert limiter.queued == 1
        with pytest.raises(DeploymentBusy) as refused:
            await limiter.acquire(seconds(60, clock))
        assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.message == (
            "deployment 'p/m' is at its limit of 1 calls in flight with 1 waiting"
        )
        limiter.release()
        await waiting

    in_virtual_time(main)


def test_with_no_queue_a_busy_deployment_refuses_at_once() -> None:
    async def main(clock: ManualClock) -> None:
        limiter = ConcurrencyLimiter("d", max_in_flight=1, max_queue=0)
        await limiter.acquire(seconds(60, clock))
        with pytest.raises(DeploymentBusy, match="at its limit"):
            await limiter.acquire(seconds(60, clock))

    in_virtual_time(main)


def test_slots_are_handed_over_in_the_order_calls_waited() -> None:
    async def main(clock: ManualClock) -> None:
        limiter = ConcurrencyLimiter("d", max_in_flight=1, max_queue=3)
        await limiter.acquire(seconds(60, clock))
        order: list[int] = []

        async def wait(n: int) -> None:
            await limiter.acquire(seconds(60, clock))
            order.append(n)

        tasks = [asyncio.ensure_future(wait(n)) for n in range(3)]
        await turn()
        assert limiter.queued == 3
        assert not limiter.try_acquire()  # a free slot would not jump the queue
        for expected in ([0], [0, 1], [0, 1, 2]):
            limiter.release()
            await turn()
            assert order == expected
            assert limiter.in_flight == 1
        limiter.release()
        assert (limiter.in_flight, limiter.queued) == (0, 0)
        await asyncio.gather(*tasks)

    in_virtual_time(main)


def test_a_wait_ends_at_the_call_s_deadline() -> None:
    async def main(clock: ManualClock) -> None:
        limiter = ConcurrencyLimiter("p/m", max_in_flight=1, max_queue=1)
        await limiter.acquire(seconds(60, clock))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DeploymentBusy) as refused:
            await limiter.acquire(seconds(5, clock))
        assert loop.time() - started == pytest.approx(5, abs=0.1)
        assert refused.value.message == (
            "deployment 'p/m' had no free slot before the call's deadline"
        )
        assert limiter.queued == 0
        limiter.release()
        assert limiter.in_flight == 0

    in_virtual_time(main)


def test_a_call_already_out_of_time_does_not_wait() -> None:
    async def main(clock: ManualClock) -> None:
        limiter = ConcurrencyLimiter("d", max_in_flight=1, max_queue=1)
        await limiter.acquire(seconds(60, clock))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DeploymentBusy, match="before the call's deadline"):
            await limiter.acquire(seconds(-1, clock))
        assert loop.time() == started
        assert limiter.queued == 0

    in_virtual_time(main)


def test_a_cancelled_wait_leaves_the_queue() -> None:
    async def main(clock: ManualClock) -> None:
        limiter = ConcurrencyLimiter("d", max_in_flight=1, max_queue=2)
        await limiter.acquire(seconds(60, clock))
        first = asyncio.ensure_future(limiter.acquire(seconds(60, clock)))
        second = asyncio.ensure_future(limiter.acquire(seconds(60, clock)))
        await turn()
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        assert limiter.queued == 1
        limiter.release()  # to the second, not the cancelled first
        await second
        assert (limiter.in_flight, limiter.queued) == (1, 0)

    in_virtual_time(main)


def test_a_wait_that_times_out_behind_another_leaves_the_other_waiting() -> None:
    async def main(clock: ManualClock) -> None:
        limiter = ConcurrencyLimiter("d", max_in_flight=1, max_queue=2)
        await limiter.acquire(seconds(60, clock))
        patient = asyncio.ensure_future(limiter.acquire(seconds(60, clock)))
        await turn()
        with pytest.raises(DeploymentBusy, match="before the call's deadline"):
            await limiter.acquire(seconds(5, clock))
        # The impatient call gave up a place it held in the queue, not a slot: the
        # patient one still waits, and the one slot is still the first call's.
        await turn()
        assert not patient.done()
        assert (limiter.in_flight, limiter.queued) == (1, 1)
        limiter.release()
        await patient
        assert (limiter.in_flight, limiter.queued) == (1, 0)

    in_virtual_time(main)


def test_a_slot_handed_to_a_call_as_it_is_cancelled_is_given_back() -> None:
    async def main(clock: ManualClock) -> None:
        limiter = ConcurrencyLimiter("d", max_in_flight=1, max_queue=1)
        await limiter.acquire(seconds(60, clock))
        waiting = asyncio.ensure_future(limiter.acquire(seconds(60, clock)))
        await turn()
        waiting.cancel()
        limiter.release()  # the slot goes to the waiter before it sees its cancellation
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (limiter.in_flight, limiter.queued) == (0, 0)
        assert limiter.try_acquire()

    in_virtual_time(main)


def test_a_slot_handed_to_a_call_as_it_is_cancelled_goes_to_the_next_waiter() -> None:
    async def main(clock: ManualClock) -> None:
        limiter = ConcurrencyLimiter("d", max_in_flight=1, max_queue=2)
        await limiter.acquire(seconds(60, clock))
        cancelled = asyncio.ensure_future(limiter.acquire(seconds(60, clock)))
        next_in_line = asyncio.ensure_future(limiter.acquire(seconds(60, clock)))
        await turn()
        cancelled.cancel()
        limiter.release()  # the slot goes to the first waiter before it sees its cancellation
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await next_in_line
        assert (limiter.in_flight, limiter.queued) == (1, 0)
        assert not limiter.try_acquire()

    in_virtual_time(main)
