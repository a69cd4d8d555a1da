"""The deadline budget of a call.

The client's gRPC deadline (or the configured default when it sets none) bounds
the whole call, every attempt, backoff and fallback included. Each attempt runs
with what remains; when it runs out the upstream request is cancelled, which
closes its HTTP exchange, and the call ends DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from ai_service.errors import DeadlineExceeded
from ai_service.timers import Timer, Timers


@dataclass(frozen=True, slots=True)
class Budget:
    """When the call must be over, on `clock`: the monotonic clock, or a test's. The
    call's attempts time their upstream waits on the same clock."""

    deadline: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def for_call(cls, time_remaining: float | None, default_seconds: float) -> Budget:
        seconds = (
            default_seconds if time_remaining is None else min(time_remaining, default_seconds)
        )
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def bound(self, timers: Timers) -> _Bounded:
        """`with budget.bound(timers):` runs the block (in a task of the timers' loop)
        within the budget."""
        return _Bounded(self, timers)


class _Bounded:
    """The block runs within the budget, or ends with DeadlineExceeded when it runs out.

    `asyncio.timeout`'s semantics on the loop's shared `Timers` rather than a loop timer
    of its own: it sits on every call's hot path (see server/timers.py). Entering and
    leaving never wait, so it is a plain context manager: no coroutine per call for each.
    """

    __slots__ = ("_budget", "_expired", "_task", "_timer", "_timers")

    _task: asyncio.Task[object]
    _timer: Timer

    def __init__(self, budget: Budget, timers: Timers) -> None:
        self._budget = budget
        self._timers = timers
        self._expired = False

    def __enter__(self) -> None:
        remaining = self._budget.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(
                "the call's deadline passed before the next wait for the upstream"
            )
        task = asyncio.current_task(self._timers.loop)
        if task is None:
            raise RuntimeError("a budget bounds a task's work; no task is running")
        self._task = task
        self._timer = self._timers.call_later(remaining, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        # As asyncio.timeout does: the cancellation is ours to turn into the deadline
        # error only if nobody else asked to cancel the task meanwhile.
        if self._expired and self._task.uncancel() == 0 and exc_type is asyncio.CancelledError:
            raise DeadlineExceeded(
                "the call's deadline passed while waiting for the upstream"
            ) from None
