"""Resilience of upstream calls: the deadline budget every attempt spends from.

The client's gRPC deadline (or the configured default when it sets none) bounds
the whole call; when it runs out the upstream request is cancelled, which closes
its HTTP exchange, and the call ends DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from server.errors import UpstreamTimeout


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

    @contextlib.asynccontextmanager
    async def bound(self) -> AsyncIterator[None]:
        """Run the block within the budget; on expiry, cancel it and raise UpstreamTimeout."""
        remaining = self.remaining()
        if remaining <= 0:
            raise UpstreamTimeout("the call's deadline passed before the upstream was called")
        try:
            async with asyncio.timeout(remaining):
                yield
        except TimeoutError:
            raise UpstreamTimeout(
                "the call's deadline passed while waiting for the upstream"
            ) from None
