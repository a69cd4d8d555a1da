"""The Redis that replicas share limits and cache through, and what happens when it fails.

Every call is bounded by `timeout_ms` (the gateway never hangs on a dead Redis).
After a failure the gateway stops asking for a second and applies the configured
policy straight away — `open`: carry on without shared limits or cache; `closed`:
refuse with UNAVAILABLE — then tries again, so it recovers by itself when Redis
returns. Failures and recoveries are logged once each, not per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ai_service.config import SharedStateSettings
from ai_service.errors import GatewayError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long to stop asking a Redis that just failed.
RETRY_AFTER_FAILURE_SECONDS = 1.0


class SharedStateUnavailable(GatewayError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "SHARED_STATE_UNAVAILABLE"
    retryable = True


class RedisUnavailable(Exception):
    """Redis did not answer in time (or at all): the caller applies its policy."""


class SharedRedis:
    def __init__(self, settings: SharedStateSettings) -> None:
        self.settings = settings
        self.prefix = settings.key_prefix
        self.fail_open = settings.on_failure == "open"
        self._timeout = settings.timeout_ms / 1000
        # A blocking pool: a burst beyond `max_connections` waits (within the timeout)
        # for a free connection instead of failing at once as if Redis were down.
        pool = redis.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.max_connections,
            timeout=self._timeout,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            # A healthy Redis (or a proxy) closes idle connections and forgets them on a
            # restart: the first command on such a pooled connection fails, so it is
            # retried once on a fresh connection. Only connection errors: a timeout is a
            # failed Redis. run() still bounds the whole call by the timeout.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            health_check_interval=0,
        )
        self.client = redis.Redis.from_pool(pool)
        self._down_until = 0.0
        self.failures = 0

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def run(self, operation: Callable[[redis.Redis], Awaitable[T]]) -> T:
        """Run one Redis operation within the timeout, or raise RedisUnavailable."""
        if time.monotonic() < self._down_until:
            raise RedisUnavailable("redis failed moments ago")
        try:
            async with asyncio.timeout(self._timeout):
                result = await operation(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            if self._down_until == 0.0:
                log.error(
                    "redis unavailable; applying on_failure=%s",
                    self.settings.on_failure,
                    extra={"error": type(exc).__name__},
                )
            self._down_until = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS
            raise RedisUnavailable(str(exc)) from None
        if self._down_until != 0.0:
            log.warning("redis is back")
            self._down_until = 0.0
        return result

    def refusal(self) -> SharedStateUnavailable:
        return SharedStateUnavailable(
            "the shared rate-limit store is unavailable and the gateway is configured to "
            "fail closed; retry shortly"
        )

    async def aclose(self) -> None:
        await self.client.aclose()
