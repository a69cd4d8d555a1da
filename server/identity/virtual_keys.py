"""Keys issued, changed and revoked at runtime (the Admin service), beside the config's.

A key is stored as the SHA-256 digest of its secret with its grants (models, limits,
budget, team, roles) and expiry: in this process's memory (`shared_state.backend:
memory`), or in Redis, where every replica finds it. The secret itself is returned once,
at creation, and never stored.

With Redis, each process keeps the keys it has looked up (and the digests no key has) in
memory, so a call costs a dictionary lookup, not a Redis round trip. Every change bumps
a version counter in Redis; each process reads it every `poll_interval_seconds` (one
small read, whatever the traffic) and forgets what it kept when it moved. A revoked key
therefore stops working on every replica within that interval plus the Redis timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from pydantic import Field

from ai_service.config import CallerGrants, StrictSettings, VirtualKeySettings
from ai_service.errors import Unauthenticated
from ai_service.identity.callers import Caller, Grantor
from ai_service.limits.shared_state import RedisUnavailable, SharedRedis, SharedStateUnavailable

if TYPE_CHECKING:
    import redis.asyncio as redis

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What every issued secret starts with, so a leaked one is recognisable (secret scanners).
SECRET_PREFIX = "aik_"


class StoredKey(StrictSettings):
    """One issued key as stored: never its secret, only the secret's digest."""

    id: str
    name: str = Field(min_length=1)
    #: Hex SHA-256 of the secret.
    digest: str
    grants: CallerGrants = Field(default_factory=CallerGrants)
    #: Unix time after which the key is refused; None: never.
    expires_at: float | None = None
    created_at: float
    #: The name of the admin caller that created it.
    created_by: str

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class KeyStore(Protocol):
    async def get(self, digest: str) -> StoredKey | None: ...
    async def by_id(self, key_id: str) -> StoredKey | None: ...
    async def put(self, key: StoredKey) -> None: ...
    async def delete(self, key: StoredKey) -> None: ...
    async def all(self) -> list[StoredKey]: ...
    async def version(self) -> int: ...


class MemoryKeyStore:
    """Keys in this process only."""

    def __init__(self) -> None:
        self._by_digest: dict[str, StoredKey] = {}
        self._digests: dict[str, str] = {}

    async def get(self, digest: str) -> StoredKey | None:
        return self._by_digest.get(digest)

    async def by_id(self, key_id: str) -> StoredKey | None:
        digest = self._digests.get(key_id)
        return self._by_digest.get(digest) if digest is not None else None

    async def put(self, key: StoredKey) -> None:
        self._by_digest[key.digest] = key
        self._digests[key.id] = key.digest

    async def delete(self, key: StoredKey) -> None:
        self._by_digest.pop(key.digest, None)
        self._digests.pop(key.id, None)

    async def all(self) -> list[StoredKey]:
        return list(self._by_digest.values())

    async def version(self) -> int:
        return 0


class RedisKeyStore:
    """Keys in the shared Redis: `<prefix>:vkey:<digest>` → the key as JSON,
    `<prefix>:vkey-ids` (id → digest), `<prefix>:vkey-version` (bumped on every change)."""

    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared
        self._ids = shared.key("vkey-ids")
        self._version = shared.key("vkey-version")

    def _name(self, digest: str) -> str:
        return self._shared.key("vkey", digest)

    async def _run(self, operation: Callable[[redis.Redis], Awaitable[T]]) -> T:
        try:
            return await self._shared.run(operation)
        except RedisUnavailable:
            raise SharedStateUnavailable(
                "cannot check or change issued keys: the shared store (Redis) is unavailable; "
                "retry shortly"
            ) from None

    async def get(self, digest: str) -> StoredKey | None:
        raw = await self._run(lambda client: client.get(self._name(digest)))
        return StoredKey.model_validate_json(raw) if raw is not None else None

    async def by_id(self, key_id: str) -> StoredKey | None:
        digest = await self._run(lambda client: client.hget(self._ids, key_id))
        if digest is None:
            return None
        return await self.get(digest.decode() if isinstance(digest, bytes) else str(digest))

    async def put(self, key: StoredKey) -> None:
        async def write(client: redis.Redis) -> None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.set(self._name(key.digest), key.model_dump_json())
                if key.expires_at is not None:  # Redis forgets it a day after it expired
                    pipe.expireat(self._name(key.digest), int(key.expires_at) + 86_400)
                pipe.hset(self._ids, key.id, key.digest)
                pipe.incr(self._version)
                await pipe.execute()

        await self._run(write)

    async def delete(self, key: StoredKey) -> None:
        async def remove(client: redis.Redis) -> None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.delete(self._name(key.digest))
                pipe.hdel(self._ids, key.id)
                pipe.incr(self._version)
                await pipe.execute()

        await self._run(remove)

    async def all(self) -> list[StoredKey]:
        async def read(client: redis.Redis) -> list[bytes | str | None]:
            digests = await client.hvals(self._ids)
            if not digests:
                return []
            names = [self._name(d.decode() if isinstance(d, bytes) else d) for d in digests]
            values: list[bytes | str | None] = await client.mget(names)
            return values

        return [StoredKey.model_validate_json(raw) for raw in await self._run(read) if raw]

    async def version(self) -> int:
        value = await self._run(lambda client: client.get(self._version))
        return int(value) if value is not None else 0


class VirtualKeys:
    """Issued keys: found by digest on the hot path, managed by the Admin service."""

    def __init__(
        self,
        settings: VirtualKeySettings,
        store: KeyStore,
        grantor: Grantor,
        *,
        shared: bool,
        fail_open: bool = True,
    ) -> None:
        self.settings = settings
        self._store = store
        self._grantor = grantor
        #: Whether other processes share the store (then its version is polled, to drop
        #: what was looked up when another process changed a key).
        self._shared = shared
        self._fail_open = fail_open
        self._found: dict[bytes, tuple[Caller, StoredKey]] = {}
        self._missing: set[bytes] = set()
        #: Bumped whenever the caches are dropped: a lookup that began before does not
        #: store its (maybe stale) answer.
        self._generation = 0
        self._version: int | None = None
        self._poller: asyncio.Task[None] | None = None

    def use(self, grantor: Grantor) -> None:
        """New roles and defaults (a config reload): callers are built again."""
        self._grantor = grantor
        self.forget()

    def forget(self) -> None:
        self._found.clear()
        self._missing.clear()
        self._generation += 1

    # -- the hot path -----------------------------------------------------------------

    async def lookup(self, digest: bytes) -> Caller | None:
        """The caller whose key has this digest, or None; Unauthenticated if it expired."""
        found = self._found.get(digest)
        if found is None:
            if digest in self._missing:
                return None
            generation = self._generation
            stored = await self._store.get(digest.hex())
            fresh = generation == self._generation  # nothing changed while it was asked
            if stored is None:
                if fresh:
                    if len(self._missing) >= self.settings.max_cached_misses:
                        self._missing.clear()
                    self._missing.add(digest)
                return None
            found = (self._caller(stored), stored)
            if fresh:
                self._found[digest] = found
        if found[1].expired(time.time()):
            raise Unauthenticated("the API key has expired")
        return found[0]

    def _caller(self, stored: StoredKey) -> Caller:
        return self._grantor.caller(stored.name, "virtual_key", stored.grants)

    # -- management (the Admin service) -------------------------------------------------

    async def create(
        self,
        name: str,
        grants: CallerGrants,
        expires_at: float | None,
        created_by: str,
    ) -> tuple[StoredKey, str]:
        """A new key and its secret (returned here only: the store keeps its digest)."""
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        key = StoredKey(
            id=secrets.token_hex(8),
            name=name,
            digest=hashlib.sha256(secret.encode()).hexdigest(),
            grants=grants,
            expires_at=expires_at,
            created_at=time.time(),
            created_by=created_by,
        )
        await self._store.put(key)
        self.forget()
        return key, secret

    async def get(self, key_id: str) -> StoredKey | None:
        return await self._store.by_id(key_id)

    async def replace(self, key: StoredKey) -> None:
        await self._store.put(key)
        self.forget()

    async def revoke(self, key: StoredKey) -> None:
        await self._store.delete(key)
        self.forget()

    async def all(self) -> list[StoredKey]:
        return sorted(await self._store.all(), key=lambda key: (key.created_at, key.id))

    # -- keeping the caches honest across replicas ----------------------------------------

    def start(self) -> None:
        if self._shared and self._poller is None:
            self._poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                version = await self._store.version()
            except SharedStateUnavailable:
                if not self._fail_open:  # unsure what was revoked: ask again per call
                    self.forget()
            else:
                if version != self._version:
                    self._version = version
                    self.forget()
            await asyncio.sleep(self.settings.poll_interval_seconds)

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None


def key_store(shared: SharedRedis | None) -> KeyStore:
    return RedisKeyStore(shared) if shared is not None else MemoryKeyStore()
