"""Authentication: who is calling, from `authorization: Bearer <key>` or `x-api-key`.

Keys are held only as SHA-256 digests (the config may give the digest itself),
and a presented key is hashed and looked up by its digest, which takes one step
however many keys there are and whose timing says nothing about any key; the key
never appears in a log line or an error. The caller found is put in `current_caller`
for the interceptors and the servicer after this one (they run in the same task).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import grpc

from server.config import AuthSettings, RateLimitSettings
from server.errors import Unauthenticated
from server.interceptors.rejection import Handler, is_guarded, rejecting_handler
from server.limiter import RateRule

log = logging.getLogger(__name__)

Metadata = Sequence[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the key's configured name, never the key."""

    name: str
    #: The models this caller may use; empty means every model.
    models: frozenset[str]
    #: Its request rate limit; None when unlimited.
    rate: RateRule | None
    #: Its token rate limit; None when unlimited.
    tokens: RateRule | None = None
    #: The most max_tokens it may ask for; None when only the model caps it.
    max_output_tokens: int | None = None
    #: Streams it may hold open at once; None when unlimited.
    max_concurrent_streams: int | None = None

    def may_use(self, model: str) -> bool:
        return not self.models or model in self.models


current_caller: ContextVar[Caller] = ContextVar("current_caller")


def rate_rule(settings: RateLimitSettings) -> RateRule | None:
    if settings.requests_per_minute == 0:
        return None
    return RateRule(
        per_minute=settings.requests_per_minute,
        burst=settings.burst or settings.requests_per_minute,
    )


def token_rule(settings: RateLimitSettings) -> RateRule | None:
    if settings.tokens_per_minute == 0:
        return None
    return RateRule(
        per_minute=settings.tokens_per_minute,
        burst=settings.token_burst or settings.tokens_per_minute,
    )


class KeyRing:
    """The configured caller keys, by digest."""

    def __init__(self, settings: AuthSettings, default_rate: RateLimitSettings) -> None:
        # Looked up by the SHA-256 of the presented key: the lookup's timing can only
        # tell how close the digest of the caller's own guess came, which says nothing
        # about any key (and it is one step however many keys there are).
        self._by_digest: dict[bytes, Caller] = {
            key.digest: Caller(
                name=key.name,
                models=frozenset(key.models),
                rate=rate_rule(key.rate_limit or default_rate),
                tokens=token_rule(key.rate_limit or default_rate),
                max_output_tokens=key.max_output_tokens,
                max_concurrent_streams=key.max_concurrent_streams,
            )
            for key in settings.keys
        }

    def authenticate(self, metadata: Metadata | None) -> Caller:
        digest = hashlib.sha256(presented_key(metadata or ()).encode()).digest()
        found = self._by_digest.get(digest)
        if found is None:
            raise Unauthenticated("invalid API key")
        return found


def presented_key(metadata: Metadata) -> str:
    """The one key a call presents, or Unauthenticated saying what is wrong."""
    keys: set[str] = set()
    for name, value in metadata:
        if isinstance(value, bytes):
            continue  # binary headers (`-bin`) never carry credentials
        if name == "authorization":
            scheme, _, token = value.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("authorization metadata must be 'Bearer <key>'")
            keys.add(token)
        elif name == "x-api-key":
            if not value.strip():
                raise Unauthenticated("x-api-key metadata is empty")
            keys.add(value.strip())
    if not keys:
        raise Unauthenticated(
            "missing credentials: send 'authorization: Bearer <key>' or 'x-api-key: <key>'"
        )
    if len(keys) > 1:
        raise Unauthenticated("conflicting credentials: more than one key presented")
    return keys.pop()


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates calls to AIService; with auth off, everyone is `anonymous`."""

    def __init__(self, keyring: KeyRing | None, anonymous: Caller) -> None:
        self.replace(keyring, anonymous)

    def replace(self, keyring: KeyRing | None, anonymous: Caller) -> None:
        """Take new keys (a config reload); the next call sees them, a running one is done."""
        self._keyring = keyring
        self._anonymous = anonymous
        if keyring is None:
            log.warning("authentication is OFF: every caller is accepted as 'anonymous'")

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        method = handler_call_details.method
        if not is_guarded(method):
            return await continuation(handler_call_details)
        if self._keyring is None:
            current_caller.set(self._anonymous)
            return await continuation(handler_call_details)
        try:
            caller = self._keyring.authenticate(handler_call_details.invocation_metadata)
        except Unauthenticated as error:
            return rejecting_handler(method, error)
        # Set before the continuation: it runs the interceptors after this one.
        current_caller.set(caller)
        return await continuation(handler_call_details)
