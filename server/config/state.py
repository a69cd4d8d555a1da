"""Shared state across processes and replicas (Redis or memory), and the response cache."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ai_service.config.base import StrictSettings


class SharedStateSettings(StrictSettings):
    """Where replicas share rate limits and the response cache."""

    #: `memory` (this process only) or `redis` (every process and replica on it).
    backend: Literal["memory", "redis"] = "memory"
    #: redis://[:password@]host:port/db (usually `${REDIS_URL}`).
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Prefix of every key the gateway writes, so several gateways can share a Redis.
    key_prefix: str = "ai-service"
    #: A Redis call that takes longer fails: the gateway never hangs on a dead Redis.
    timeout_ms: float = Field(100.0, gt=0)
    #: Rate limits in Redis are spent from local leases of this share of a bucket's
    #: burst (one Redis call per lease, not per call); 0 asks Redis on every call.
    lease_fraction: float = Field(0.01, ge=0, lt=1)
    #: Redis connections per process; more concurrent Redis calls wait (within
    #: `timeout_ms`) for one to be free.
    max_connections: int = Field(100, gt=0)
    #: When Redis fails: `open` lets calls through unlimited and uncached, `closed`
    #: refuses them (UNAVAILABLE) until it is back.
    on_failure: Literal["open", "closed"] = "open"
    #: Redis calls that fail in a row (calls a single stall catches together count once)
    #: before Redis is treated as down: until then a failure costs only the calls it hit.
    switch_after_failures: int = Field(3, ge=1)


class CacheSettings(StrictSettings):
    """Exact-match response cache (in the shared-state backend)."""

    enabled: bool = False
    #: `deterministic`: only calls with temperature 0 or a fixed seed; `always`: every call.
    when: Literal["deterministic", "always"] = "deterministic"
    ttl_seconds: float = Field(300.0, gt=0)
    #: Entries kept by the in-memory cache (least recently used go first).
    max_entries: int = Field(10_000, gt=0)
