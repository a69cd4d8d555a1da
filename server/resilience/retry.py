"""Retry pacing: exponential backoff with full jitter, and a process-wide retry budget.

The budget (after Envoy's) lets retries add at most `ratio` of the calls seen,
plus a small steady allowance, so that during an outage retries cannot multiply
the load on an upstream that is already failing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from ai_service.config import RetrySettings


def backoff_delay(retry: int, settings: RetrySettings, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `retry` (1 for the first retry): full jitter."""
    ceiling = min(settings.backoff_max_ms, settings.backoff_base_ms * 2 ** (retry - 1)) / 1000
    return (rng or random).uniform(0.0, ceiling)


class RetryBudget:
    def __init__(
        self, settings: RetrySettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock  # a test's own clock drives the refill without waiting
        self._ratio = settings.budget_ratio
        self._per_second = settings.budget_min_per_second
        # Allow a burst of retries worth a few seconds of the steady allowance.
        self._cap = max(10.0, self._per_second * 10)
        self._balance = self._cap
        self._updated = clock()
        self.retries = 0
        self.denied = 0

    def record_call(self) -> None:
        """Every call earns the budget `ratio` of a retry."""
        self._refill()
        self._balance = min(self._cap, self._balance + self._ratio)

    def try_spend(self) -> bool:
        """Take one retry from the budget, if there is one."""
        self._refill()
        if self._balance >= 1.0:
            self._balance -= 1.0
            self.retries += 1
            return True
        self.denied += 1
        return False

    def _refill(self) -> None:
        now = self._clock()
        self._balance = min(self._cap, self._balance + (now - self._updated) * self._per_second)
        self._updated = now
