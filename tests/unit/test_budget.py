"""A call's deadline budget, and the cool-down after an upstream 429."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from ai_service.errors import DeadlineExceeded
from ai_service.resilience import Budget, Cooldown
from ai_service.timers import Timers
from tests.clock import ManualClock, in_virtual_time


@pytest.mark.parametrize(
    ("time_remaining", "default", "seconds"),
    [(None, 30.0, 30.0), (5.0, 30.0, 5.0), (45.0, 30.0, 30.0), (30.0, 30.0, 30.0)],
)
def test_a_call_has_its_client_s_deadline_or_the_default_whichever_is_sooner(
    time_remaining: float | None, default: float, seconds: float
) -> None:
    before = time.monotonic()
    budget = Budget.for_call(time_remaining, default)
    after = time.monotonic()
    assert before + seconds <= budget.deadline <= after + seconds


def test_what_remains_is_the_deadline_less_now() -> None:
    budget = Budget(time.monotonic() + 10)
    remaining = budget.remaining()
    assert 0 < remaining <= 10
    assert Budget(time.monotonic() - 1).remaining() < 0


def test_a_bounded_block_that_ends_in_time_is_untouched() -> None:
    async def main(_: ManualClock) -> None:
        timers = Timers.of(asyncio.get_running_loop())
        with Budget(time.monotonic() + 5).bound(timers):
            await asyncio.sleep(4)
        assert timers.pending == 0  # its timer was cancelled
        await asyncio.sleep(10)  # and never fires later

    in_virtual_time(main)


def test_a_bounded_block_that_outlives_the_budget_ends_with_the_deadline() -> None:
    async def main(_: ManualClock) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        bounded = Budget(time.monotonic() + 5).bound(Timers.of(loop))
        with pytest.raises(DeadlineExceeded) as raised, bounded:
            await asyncio.sleep(60)
        assert raised.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "passed while waiting for the upstream" in raised.value.message
        assert loop.time() - started == pytest.approx(5, abs=0.1)

    in_virtual_time(main)


def test_a_block_entered_after_the_deadline_does_not_start() -> None:
    async def main(_: ManualClock) -> None:
        ran = False
        late = Budget(time.monotonic() - 0.001).bound(Timers.of(asyncio.get_running_loop()))
        with pytest.raises(DeadlineExceeded, match="passed before the next wait"), late:
            ran = True
        assert not ran

    in_virtual_time(main)


def test_a_block_entered_at_the_deadline_itself_does_not_start() -> None:
    async def main(clock: ManualClock) -> None:
        ran = False
        due = Budget(clock.now, clock).bound(Timers.of(asyncio.get_running_loop()))
        with pytest.raises(DeadlineExceeded, match="passed before the next wait"), due:
            ran = True
        assert not ran

    in_virtual_time(main)


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def main(_: ManualClock) -> None:
        timers = Timers.of(asyncio.get_running_loop())

        async def bounded() -> None:
            with Budget(time.monotonic() + 5).bound(timers):
                await asyncio.sleep(60)

        task = asyncio.ensure_future(bounded())
        await asyncio.sleep(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    in_virtual_time(main)


def test_a_cancellation_from_elsewhere_at_the_deadline_stays_a_cancellation() -> None:
    async def main(_: ManualClock) -> None:
        loop = asyncio.get_running_loop()
        timers = Timers.of(loop)

        async def bounded() -> None:
            with Budget(time.monotonic() + 5).bound(timers):
                await asyncio.sleep(60)

        task = asyncio.ensure_future(bounded())
        await asyncio.sleep(0)
        # Cancelled by someone else in the same turn as the deadline passes.
        (deadline,) = [entry[0] for entry in timers._heap]  # when the budget runs out
        loop.call_at(deadline, task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task

    in_virtual_time(main)


def test_an_error_of_the_block_passes_through_even_after_the_deadline() -> None:
    async def main(_: ManualClock) -> None:
        timers = Timers.of(asyncio.get_running_loop())
        with pytest.raises(ValueError, match="own"), Budget(time.monotonic() + 1).bound(timers):
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                raise ValueError("its own") from None

    in_virtual_time(main)


def test_a_budget_bounds_only_work_in_a_task() -> None:
    loop = asyncio.new_event_loop()
    try:
        bounded = Budget(time.monotonic() + 5).bound(Timers.of(loop))
        with pytest.raises(RuntimeError, match="no task is running"), bounded:
            pass
    finally:
        loop.close()


# -- cool-down -----------------------------------------------------------------------------


def test_a_cool_down_runs_for_its_seconds_and_keeps_the_longest() -> None:
    clock = ManualClock()
    cooldown = Cooldown(clock)
    assert cooldown.remaining() == 0
    cooldown.start(2)
    assert cooldown.remaining() == 2
    cooldown.start(1)  # a shorter Retry-After does not cut the running one short
    clock.now += 1.5
    assert cooldown.remaining() == 0.5
    cooldown.start(3)  # a longer one extends it
    assert cooldown.remaining() == 3
    clock.now += 3
    assert cooldown.remaining() == 0
    clock.now += 1
    assert cooldown.remaining() == 0


def test_a_new_cool_down_after_one_ended_counts_from_now() -> None:
    clock = ManualClock()
    cooldown = Cooldown(clock)
    cooldown.start(1)
    clock.now += 5
    assert cooldown.remaining() == 0
    cooldown.start(0.5)
    assert cooldown.remaining() == 0.5


@pytest.mark.parametrize("origin", [0.0, -100.0, 1000.0])
def test_a_cool_down_is_the_same_whatever_the_clock_s_origin(origin: float) -> None:
    # A monotonic clock's reading means nothing on its own: it may start at 0, or below.
    clock = ManualClock(origin)
    cooldown = Cooldown(clock)
    assert cooldown.remaining() == 0
    cooldown.start(0.25)
    clock.now += 0.5  # over, and asked twice
    assert cooldown.remaining() == 0
    assert cooldown.remaining() == 0
    clock.now += 0.25
    assert cooldown.remaining() == 0
    cooldown.start(2)
    clock.now += 2.5  # over by less than a second
    assert cooldown.remaining() == 0
