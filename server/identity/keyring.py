"""Configured caller keys: a presented key → its `Caller`, looked up by digest.

Keys are held only as SHA-256 digests (the config may give the digest itself), and a
presented key is hashed and looked up by its digest, which takes one step however many
keys there are and whose timing says nothing about any key; the key never appears in a
log line or an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ai_service.config import AuthSettings, GatewayConfig, RateLimitSettings
from ai_service.errors import Unauthenticated
from ai_service.identity.callers import Caller, rate_rule, token_rule

Metadata = Sequence[tuple[str, str | bytes]]


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


def access(config: GatewayConfig) -> tuple[KeyRing | None, Caller]:
    """Who may call under `config`: the key ring (None with auth off) and the anonymous caller."""
    keyring = KeyRing(config.auth, config.rate_limit) if config.auth.enabled else None
    anonymous = Caller(
        "anonymous",
        frozenset(),
        rate_rule(config.rate_limit),
        token_rule(config.rate_limit),
    )
    return keyring, anonymous
