"""Which rate limiter a gateway process uses, from the shared-state settings."""

from __future__ import annotations

from ai_service.config import SharedStateSettings
from ai_service.limits.buckets import (
    InMemoryRateLimiter,
    LeasedRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from ai_service.limits.shared_state import SharedRedis


def build_limiter(settings: SharedStateSettings, shared: SharedRedis | None) -> RateLimiter:
    """Redis (through leases unless `lease_fraction` is 0) when `shared` is given, else
    buckets in this process."""
    if shared is None:
        return InMemoryRateLimiter()
    redis = RedisRateLimiter(shared)
    return LeasedRateLimiter(redis, settings.lease_fraction) if settings.lease_fraction else redis
