"""Which rate limiter and spend ledger a gateway process uses, from the shared-state settings."""

from __future__ import annotations

import os

from ai_service.config import CostSettings, SharedStateSettings
from ai_service.limits.buckets import (
    InMemoryRateLimiter,
    LeasedRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from ai_service.limits.host_buckets import HOST_BUCKETS_VARIABLE, HostRateLimiter
from ai_service.limits.ledger import Ledger, MemoryLedger
from ai_service.limits.redis_ledger import RedisLedger
from ai_service.limits.shared_state import SharedRedis


def build_limiter(settings: SharedStateSettings, shared: SharedRedis | None) -> RateLimiter:
    """Redis (through leases unless `lease_fraction` is 0) when `shared` is given; else
    the buckets the workers of this host share, when a supervisor runs this process as
    one of them; else buckets in this process."""
    if shared is None:
        host_buckets = os.environ.get(HOST_BUCKETS_VARIABLE)
        return HostRateLimiter(host_buckets) if host_buckets else InMemoryRateLimiter()
    redis = RedisRateLimiter(shared)
    return LeasedRateLimiter(redis, settings.lease_fraction) if settings.lease_fraction else redis


def build_ledger(settings: CostSettings, shared: SharedRedis | None) -> Ledger:
    """Redis when `shared` is given (every process and replica), else this process's memory."""
    if shared is None:
        return MemoryLedger(settings.retention_days)
    return RedisLedger(shared, settings.retention_days)
