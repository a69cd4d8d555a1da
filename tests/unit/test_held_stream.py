"""A stream's waits on its upstream: ended by the call's deadline (one timer for the rest
of the stream) or a drain's end, never while the stream's chunk is with its caller."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from ai_service.errors import DeadlineExceeded, Draining
from ai_service.pipeline.drain import Drain
from ai_service.resilience import Budget
from ai_service.timers import Timers
from tests.clock import ManualClock, in_virtual_time


def test_a_wait_that_outlives_the_deadline_ends_with_it() -> None:
    async def main(clock: ManualClock) -> None:
        loop = asyncio.get_running_loop()
        with Drain().hold() as held:
            held.within(Budget(clock.now + 5, clock), Timers.of(loop))
            with held:
                await asyncio.sleep(1)  # a chunk in time
            started = loop.time()
            with pytest.raises(DeadlineExceeded) as raised, held:
                await asyncio.sleep(60)
        assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "passed while waiting for the upstream" in raised.value.message
        assert loop.time() - started == pytest.approx(4, abs=0.1)

    in_virtual_time(main)


def test_the_time_with_the_caller_is_not_cut_but_the_next_wait_does_not_start() -> None:
    async def main(clock: ManualClock) -> None:
        timers = Timers.of(asyncio.get_running_loop())
        ran = False
        with Drain().hold() as held:
            held.within(Budget(clock.now + 5, clock), timers)
            await asyncio.sleep(10)  # a slow caller reading a chunk: not cancelled
            with pytest.raises(DeadlineExceeded, match="passed before the next wait"), held:
                ran = True
        assert not ran

    in_virtual_time(main)


def test_a_stream_that_ends_in_time_leaves_no_timer() -> None:
    async def main(clock: ManualClock) -> None:
        timers = Timers.of(asyncio.get_running_loop())
        with Drain().hold() as held:
            held.within(Budget(clock.now + 5, clock), timers)
            for _ in range(3):
                with held:
                    await asyncio.sleep(1)
            assert timers.pending == 1  # one for the whole stream, not one per wait
        assert timers.pending == 0
        await asyncio.sleep(10)  # and it never fires later

    in_virtual_time(main)


def test_a_drain_ends_a_wait_and_its_cause_is_kept_when_the_deadline_follows() -> None:
    async def main(clock: ManualClock) -> None:
        loop = asyncio.get_running_loop()
        drain = Drain()
        with drain.hold() as held:
            # Due at the deadline itself, and run just before its timer.
            loop.call_later(5, drain.end_streams)
            held.within(Budget(clock.now + 5, clock), Timers.of(loop))
            with pytest.raises(Draining), held:
                await asyncio.sleep(60)
            with pytest.raises(Draining), held:
                pass

    in_virtual_time(main)


def test_a_cancel_of_the_callers_own_stays_a_cancel() -> None:
    async def main(clock: ManualClock) -> None:
        loop = asyncio.get_running_loop()

        async def stream() -> None:
            with Drain().hold() as held:
                held.within(Budget(clock.now + 5, clock), Timers.of(loop))
                with held:
                    await asyncio.sleep(60)

        task = asyncio.ensure_future(stream())
        await asyncio.sleep(0)  # its deadline's timer is set
        # At the deadline, before the stream runs again, its caller cancels it too.
        loop.call_later(5, task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task

    in_virtual_time(main)
