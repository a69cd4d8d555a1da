"""Time that a test moves: a clock to inject, and an event loop that runs on it.

`ManualClock` stands in for `time.monotonic` wherever the code takes a clock. `in_virtual_time`
runs a coroutine on an event loop whose `time()` is such a clock: when the loop has nothing
to do but wait for a timer, the clock jumps to that timer instead of the loop sleeping. So
`asyncio.sleep(60)`, `call_later`, `wait_for` timeouts and the loop's `Timers` all take no
real time, and a test can assert exactly how long something waited. Only for code that
waits on nothing but the loop's own timers and tasks (no sockets, threads or processes).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class ManualClock:
    """A monotonic clock the test moves by hand (`clock.now += 5`)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _JumpingSelector(selectors.DefaultSelector):
    """Waits on the clock instead of the wall: a wait with nothing ready moves the clock."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only another thread could wake the loop
            return super().select(None)
        self._clock.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock()
        super().__init__(_JumpingSelector(self.clock))

    def time(self) -> float:
        return self.clock.now


def in_virtual_time(
    main: Callable[[ManualClock], Coroutine[Any, Any, T]], clock: ManualClock | None = None
) -> T:
    """Run `main(clock)` on a `VirtualTimeLoop` driven by `clock` (a new one by default)."""
    clock = clock or ManualClock()
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(clock)) as runner:
        return runner.run(main(clock))
