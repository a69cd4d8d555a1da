"""The end of a drain's grace: streams still running are ended by the gateway itself.

When `shutdown_grace_seconds` runs out, gRPC cancels whatever is left with a bare
UNAVAILABLE ("Cancelling all calls"): a stream cut that way does not say it was cut,
nor how much of it arrived. So shortly before, the gateway ends each one with the
stream contract's own status: DRAINING (UNAVAILABLE, retryable) before its first chunk,
STREAM_INTERRUPTED with `chunks_delivered` after. A stream waiting on its upstream is
cancelled there; one whose chunk is on its way to the caller ends at its next wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from types import TracebackType

from ai_service.errors import Draining


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

    def end_streams(self) -> None:
        self.ending = True
        for held in self._streams:
            held.end()


class HeldStream:
    """A running stream; a context manager around each wait on its upstream (a class, not
    a generator: it is entered on every chunk)."""

    __slots__ = ("_drain", "_ended", "_task", "_waiting")

    def __init__(self, drain: Drain, task: asyncio.Task[object] | None) -> None:
        self._drain = drain
        self._task = task
        self._waiting = False
        self._ended = False  # cancelled by `end` while it waited

    def end(self) -> None:
        """Cancel its wait, if it is waiting; otherwise its next wait ends it."""
        if self._waiting and self._task is not None and not self._ended:
            self._ended = True
            self._task.cancel()

    def __enter__(self) -> None:
        if self._drain.ending:
            raise _draining()
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
        if self._ended and self._task is not None:
            self._ended = False
            if self._task.uncancel() == 0 and exc_type is asyncio.CancelledError:
                raise _draining() from None


def _draining() -> Draining:
    return Draining("the gateway is shutting down and its grace period is over")
