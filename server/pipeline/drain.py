"""The end of a drain's grace, and the call's deadline, for streams already answering.

When `shutdown_grace_seconds` runs out, gRPC cancels whatever is left with a bare
UNAVAILABLE ("Cancelling all calls"): a stream cut that way does not say it was cut,
nor how much of it arrived. So shortly before, the gateway ends each one with the
stream contract's own status: DRAINING (UNAVAILABLE, retryable) before its first chunk,
STREAM_INTERRUPTED with `chunks_delivered` after. A stream waiting on its upstream is
cancelled there; one whose chunk is on its way to the caller ends at its next wait.

The call's deadline ends a stream's waits on its upstream the same way, never its
sends to the caller: one timer for the rest of the stream (`HeldStream.within`) rather
than a deadline entered and left around the wait for every chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from types import TracebackType

from ai_service.errors import DeadlineExceeded, Draining, GatewayError
from ai_service.resilience import Budget
from ai_service.timers import Timer, Timers


class Drain:
    """The streams of one servicer, and `end_streams` to end them all."""

    def __init__(self) -> None:
        self._streams: set[HeldStream] = set()
        self.ending = False

    @contextlib.contextmanager
    def hold(self) -> Iterator[HeldStream]:
        """One stream, for the whole of it: `with drain.hold() as held:`, and around each
        wait on its upstream, `with held:`."""
        held = HeldStream(self, asyncio.current_task())
        self._streams.add(held)
        try:
            yield held
        finally:
            self._streams.discard(held)
            held.release()

    def end_streams(self) -> None:
        self.ending = True
        for held in self._streams:
            held.end()


#: Why a stream's waits end: its error, for a wait cut short (True) or not begun (False).
Cut = Callable[[bool], GatewayError]


class HeldStream:
    """A running stream; a context manager around each wait on its upstream (a class, not
    a generator: it is entered on every chunk)."""

    __slots__ = ("_cancelled", "_cut", "_drain", "_task", "_timer", "_waiting")

    def __init__(self, drain: Drain, task: asyncio.Task[object] | None) -> None:
        self._drain = drain
        self._task = task
        self._waiting = False
        self._cancelled = False  # its task cancelled here while it waited
        self._cut: Cut | None = None  # the first reason its waits end
        self._timer: Timer | None = None

    def within(self, budget: Budget, timers: Timers) -> None:
        """Bound each later wait by `budget` (timers of the stream's loop)."""
        self._timer = timers.call_later(budget.remaining(), self._deadline_passed)

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def end(self) -> None:
        """Cancel its wait, if it is waiting; otherwise its next wait ends it."""
        self._cut_off(_draining)

    def _deadline_passed(self) -> None:
        self._cut_off(_past_deadline)

    def _cut_off(self, cut: Cut) -> None:
        if self._cut is None:
            self._cut = cut
        if self._waiting and self._task is not None and not self._cancelled:
            self._cancelled = True
            self._task.cancel()

    def __enter__(self) -> None:
        if self._drain.ending:
            raise _draining(False)
        if self._cut is not None:
            raise self._cut(False)
        self._waiting = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._waiting = False
        # As asyncio.timeout does: the cancellation is ours to turn into an error only if
        # nobody else asked to cancel the task meanwhile.
        if self._cancelled and self._task is not None:
            self._cancelled = False
            if self._task.uncancel() == 0 and exc_type is asyncio.CancelledError:
                assert self._cut is not None  # set before the task was cancelled
                raise self._cut(True) from None


def _draining(waiting: bool) -> Draining:
    return Draining("the gateway is shutting down and its grace period is over")


def _past_deadline(waiting: bool) -> DeadlineExceeded:
    when = "while waiting for" if waiting else "before the next wait for"
    return DeadlineExceeded(f"the call's deadline passed {when} the upstream")
