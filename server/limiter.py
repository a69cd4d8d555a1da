"""Request rate limits behind one small interface.

`RequestLimiter` is what the rate-limit interceptor talks to. This module holds
the in-process implementation (a token bucket per key), the default for a single
process; a Redis-backed one shares the same interface when replicas must share
limits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RateRule:
    """`per_minute` sustained requests, up to `burst` at once."""

    per_minute: int
    burst: int

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    #: Seconds until a request would be allowed again (0 when allowed).
    retry_after: float = 0.0


ALLOWED = Decision(True)


class RequestLimiter(Protocol):
    async def acquire(self, subject: str, rule: RateRule) -> Decision:
        """Take one request from `subject`'s allowance, or say how long to wait."""
        ...


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class InMemoryRequestLimiter:
    """A token bucket per subject, refilled continuously; exact within one process."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._now = time.monotonic

    async def acquire(self, subject: str, rule: RateRule) -> Decision:
        return self.acquire_now(subject, rule)

    def acquire_now(self, subject: str, rule: RateRule) -> Decision:
        now = self._now()
        bucket = self._buckets.get(subject)
        if bucket is None:
            bucket = self._buckets[subject] = _Bucket(float(rule.burst), now)
        else:
            refill = (now - bucket.updated) * rule.per_second
            bucket.tokens = min(float(rule.burst), bucket.tokens + refill)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return ALLOWED
        return Decision(False, (1.0 - bucket.tokens) / rule.per_second)
