"""A concurrency limit per deployment: N calls in flight, a bounded queue behind them.

A call that finds the queue full, or whose wait would pass its deadline, is
refused with `DeploymentBusy` (RESOURCE_EXHAUSTED) rather than piling up. The
in-flight count also feeds least-outstanding-requests balancing.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ai_service.errors import DeploymentBusy
from ai_service.resilience.budget import Budget


class ConcurrencyLimiter:
    def __init__(self, name: str, max_in_flight: int, max_queue: int) -> None:
        self.name = name
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """A slot at once, if one is free and nobody waits for one."""
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def acquire(self, budget: Budget) -> None:
        if self.try_acquire():
            return
        if len(self._waiters) >= self.max_queue:
            raise DeploymentBusy(
                f"deployment {self.name!r} is at its limit of {self.max_in_flight} calls in "
                f"flight with {self.max_queue} waiting"
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # The slot is handed over by release(): in_flight is already counted for us.
            await asyncio.wait_for(asyncio.shield(waiter), max(budget.remaining(), 0.0))
        except TimeoutError:
            self._abandon(waiter)
            raise DeploymentBusy(
                f"deployment {self.name!r} had no free slot before the call's deadline"
            ) from None
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done() and not waiter.cancelled():
            self.release()  # the slot arrived as we gave up: pass it on
        else:
            waiter.cancel()
            self._waiters.remove(waiter)

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # hand the slot straight to the next in line
                return
        self.in_flight -= 1
