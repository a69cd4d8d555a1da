"""The response cache and single-flight.

Exact match on a canonical hash of everything that shapes the answer (model,
messages, tools, tool choice, sampling parameters, stop, response format), and of
nothing that does not (user, metadata, gateway options). By default only calls
that ask for a deterministic answer (temperature 0 or a fixed seed) are cached;
errors never are. The cache lives in this process (LRU with TTL) or in Redis,
where every replica shares it. Identical cacheable calls in flight at the same
time on one process share one upstream call (single-flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ai_service.config import CacheSettings
from ai_service.limits.shared_state import RedisUnavailable, SharedRedis
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest

T = TypeVar("T")


class ResponseCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_seconds: float) -> None: ...


class MemoryCache:
    """Least-recently-used entries with an expiry each, in this process."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._clock = clock  # a test's own clock expires entries without waiting

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._entries[key] = (self._clock() + ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class RedisCache:
    """Entries in Redis, shared by every replica; a Redis failure is a miss, never an error."""

    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared

    async def get(self, key: str) -> bytes | None:
        name = self._shared.key("cache", key)
        try:
            value = await self._shared.run(lambda client: client.get(name))
        except RedisUnavailable:
            return None
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes, ttl_seconds: float) -> None:
        name, milliseconds = self._shared.key("cache", key), max(int(ttl_seconds * 1000), 1)
        # An unwritten entry costs one more upstream call later, nothing else.
        with contextlib.suppress(RedisUnavailable):
            await self._shared.run(lambda client: client.set(name, value, px=milliseconds))


def cache_key(request: ChatCompletionRequest, settings: CacheSettings, route: str) -> str | None:
    """The canonical key of a cacheable request on the route with fingerprint `route`,
    or None when it must not be cached."""
    if request.options.bypass_cache:
        return None
    deterministic = (request.HasField("temperature") and request.temperature == 0) or (
        request.HasField("seed")
    )
    if settings.when == "deterministic" and not deterministic:
        return None
    canonical = ChatCompletionRequest()
    canonical.CopyFrom(request)
    # What does not change the answer does not split the cache.
    canonical.ClearField("user")
    canonical.ClearField("metadata")
    canonical.ClearField("options")
    digest = hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()
    return f"{request.model}:{route}:{digest}"


def ttl_for(request: ChatCompletionRequest, settings: CacheSettings) -> float:
    return float(request.options.cache_ttl_seconds or settings.ttl_seconds)


@dataclass
class _Flight(Generic[T]):
    task: asyncio.Task[T]
    waiters: int = 0


class SingleFlight(Generic[T]):
    """Identical work in flight at once runs once; everyone waiting gets its result.

    The work runs in a task of its own, so the caller that started it may go away
    without failing the others; when the last one has gone, the work is cancelled.
    """

    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}
        #: Every flight's task until it is done (a cancelled one is forgotten at once).
        self._running: set[asyncio.Task[T]] = set()

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """The work's result, and whether it was shared with an earlier caller."""
        flight = self._flights.get(key)
        shared = flight is not None
        if flight is None:
            flight = _Flight(asyncio.ensure_future(work()))
            self._flights[key] = flight
            self._running.add(flight.task)
            flight.task.add_done_callback(self._running.discard)
            flight.task.add_done_callback(lambda _: self._forget(key, flight))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), shared
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()
                # Forgotten now, not when the task has unwound: a caller arriving
                # meanwhile starts afresh instead of joining work being cancelled.
                self._forget(key, flight)

    def _forget(self, key: str, flight: _Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    async def finished(self) -> None:
        """Until every flight's task is done, those cancelled included."""
        if self._running:
            await asyncio.wait(set(self._running))

    def __len__(self) -> int:
        return len(self._flights)
