"""The shared per-loop timeouts behind call deadlines and upstream read timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from ai_service.timers import Timers
from tests.clock import ManualClock, in_virtual_time


def test_timeouts_run_in_time_order_and_cancelled_ones_never_run() -> None:
    async def main(_: ManualClock) -> None:
        loop = asyncio.get_running_loop()
        timers = Timers.of(loop)
        assert Timers.of(loop) is timers  # one per loop
        ran: list[tuple[str, float]] = []
        started = loop.time()

        def note(name: str) -> Callable[[], None]:
            return lambda: ran.append((name, loop.time() - started))

        timers.call_later(0.06, note("late"))
        timers.call_later(0.02, note("early"))  # earlier than the armed one
        doomed = timers.call_later(0.04, note("cancelled"))
        doomed.cancel()
        doomed.cancel()  # twice is harmless
        await asyncio.sleep(1)
        assert ran == [("early", pytest.approx(0.02)), ("late", pytest.approx(0.06))]
        assert timers.pending == 0

    in_virtual_time(main)


def test_a_failing_callback_is_reported_and_the_others_still_run() -> None:
    async def main(_: ManualClock) -> None:
        loop = asyncio.get_running_loop()
        reported: list[object] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
        ran: list[int] = []

        def broken() -> None:
            raise ValueError("boom")

        timers = Timers.of(loop)
        timers.call_later(0.01, broken)
        timers.call_later(0.01, lambda: ran.append(1))
        await asyncio.sleep(1)
        assert ran == [1]
        assert [type(e) for e in reported] == [ValueError]

    in_virtual_time(main)


async def test_thousands_of_cancelled_timeouts_do_not_pile_up() -> None:
    timers = Timers.of(asyncio.get_running_loop())
    for _ in range(20_000):
        timers.call_later(600, lambda: None).cancel()
    keep = timers.call_later(600, lambda: None)
    assert timers.pending == 1
    assert len(timers._heap) < 5_000  # rebuilt without the dead, again and again
    keep.cancel()


@pytest.mark.parametrize("delay", [0.0, 0.001])
async def test_a_timeout_due_at_once_runs_on_the_next_pass(delay: float) -> None:
    fired = asyncio.Event()
    Timers.of(asyncio.get_running_loop()).call_later(delay, fired.set)
    await asyncio.wait_for(fired.wait(), 1)
