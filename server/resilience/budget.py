"""The deadline budget of a call.

The client's gRPC deadline (or the configured default when it sets none) bounds
the whole call, every attempt, backoff and fallback included. Each attempt runs
with what remains; when it runs out the upstream request is cancelled, which
closes its HTTP exchange, and the call ends DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from types import TracebackType

from server.errors import DeadlineExceeded


@dataclass(frozen=True, slots=True)
class Budget:
    """When the call must be over, on the monotonic clock."""

    deadline: float

    @classmethod
    def for_call(cls, time_remaining: float | None, default_seconds: float) -> Budget:
        seconds = (
            default_seconds if time_remaining is None else min(time_remaining, default_seconds)
        )
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def bound(self) -> _Bounded:
        """`async with budget.bound():` runs the block within the budget."""
        return _Bounded(self)


class _Bounded:
    """asyncio.timeout at the budget's deadline, raising DeadlineExceeded on expiry.

    A class rather than an asynccontextmanager: it sits on every call's hot path.
    """

    __slots__ = ("_budget", "_timeout")

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self._timeout: asyncio.Timeout | None = None

    async def __aenter__(self) -> None:
        if self._budget.remaining() <= 0:
            raise DeadlineExceeded("the call's deadline passed before the upstream was called")
        loop_deadline = asyncio.get_running_loop().time() + self._budget.remaining()
        self._timeout = asyncio.timeout_at(loop_deadline)
        await self._timeout.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._timeout is not None
        try:
            await self._timeout.__aexit__(exc_type, exc, traceback)
        except TimeoutError:
            raise DeadlineExceeded(
                "the call's deadline passed while waiting for the upstream"
            ) from None
