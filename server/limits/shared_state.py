"""The Redis that replicas share limits and cache through, and what happens when it fails.

Every call is bounded by `timeout_ms` (the gateway never hangs on a dead Redis). A call
that fails gets the configured policy — `open`: carry on without shared limits or
cache; `closed`: refuse with UNAVAILABLE. One slow reply is not an outage: only after
`switch_after_failures` failures in a row does the gateway treat Redis as down,
apply the policy to every call at once without asking, and ask again once a second,
so it recovers by itself when Redis returns. Failures count in a row when each Redis
call began after the previous counted one failed: the calls a single stall (of Redis,
or of this process) caught together count once. The switch and the return are logged
once each, and `failure_mode` shows which mode holds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import grpc

from ai_service.config import SharedStateSettings
from ai_service.errors import GatewayError

if TYPE_CHECKING:
    import redis.asyncio as redis

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long to stop asking a Redis found down before asking again.
RETRY_AFTER_FAILURE_SECONDS = 1.0


class SharedStateUnavailable(GatewayError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "SHARED_STATE_UNAVAILABLE"
    retryable = True


class RedisUnavailable(Exception):
    """Redis did not answer in time (or at all): the caller applies its policy."""


class SharedRedis:
    def __init__(self, settings: SharedStateSettings) -> None:
        # redis-py is imported by a gateway that shares state, not by every one: ~8 MiB
        # of each worker's memory.
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError

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
        #: What a failed Redis call raises.
        self._failures = (RedisError, OSError, TimeoutError)
        self._switch_after = settings.switch_after_failures
        #: Failures in a row, and when the last of them that counted was seen.
        self._streak = 0
        self._counted_at = -math.inf
        self._down_until = 0.0
        #: Whether Redis is treated as down (the policy applies without asking it).
        self.failure_mode = False
        self.failures = 0

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def run(self, operation: Callable[[redis.Redis], Awaitable[T]]) -> T:
        """Run one Redis operation within the timeout, or raise RedisUnavailable."""
        started = time.monotonic()
        if started < self._down_until:
            raise RedisUnavailable("redis failed moments ago")
        try:
            async with asyncio.timeout(self._timeout):
                result = await operation(self.client)
        except self._failures as exc:
            self.failures += 1
            self._failed(started, exc)
            raise RedisUnavailable(str(exc)) from None
        self._streak = 0
        if self.failure_mode:
            log.warning("redis is back")
            self.failure_mode = False
            self._down_until = 0.0
        return result

    def _failed(self, started: float, exc: BaseException) -> None:
        now = time.monotonic()
        if started >= self._counted_at:  # not caught in the same stall as the last one
            self._streak += 1
            self._counted_at = now
        if self._streak < self._switch_after:
            return
        if not self.failure_mode:
            log.error(
                "redis unavailable; applying on_failure=%s",
                self.settings.on_failure,
                extra={"error": type(exc).__name__, "failures_in_a_row": self._streak},
            )
            self.failure_mode = True
        self._down_until = now + RETRY_AFTER_FAILURE_SECONDS

    def refusal(self) -> SharedStateUnavailable:
        return SharedStateUnavailable(
            "the shared rate-limit store is unavailable and the gateway is configured to "
            "fail closed; retry shortly"
        )

    async def aclose(self) -> None:
        await self.client.aclose()
