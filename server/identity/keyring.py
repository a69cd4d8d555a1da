"""Configured caller keys: a presented key's digest → its `Caller`.

Keys are held only as SHA-256 digests (the config may give the digest itself), and a
presented key is hashed and looked up by its digest, which takes one step however many
keys there are and whose timing says nothing about any key; the key never appears in a
log line or an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ai_service.config import AuthSettings
from ai_service.errors import Unauthenticated
from ai_service.identity.callers import Caller, Grantor

Metadata = Sequence[tuple[str, str | bytes]]


class KeyRing:
    """The configured caller keys, by digest."""

    def __init__(self, settings: AuthSettings, grantor: Grantor) -> None:
        # Looked up by the SHA-256 of the presented key: the lookup's timing can only
        # tell how close the digest of the caller's own guess came, which says nothing
        # about any key (and it is one step however many keys there are).
        self._by_digest: dict[bytes, Caller] = {
            key.digest: grantor.caller(key.name, "config_key", key) for key in settings.keys
        }

    def find(self, digest: bytes) -> Caller | None:
        return self._by_digest.get(digest)


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def has_credentials(metadata: Metadata) -> bool:
    """Whether the call presents a key or token at all (well-formed or not)."""
    return any(name in ("authorization", "x-api-key") for name, _ in metadata)


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


def looks_like_jwt(credential: str) -> bool:
    """A compact JWS: three base64url parts, the first a JSON object (`eyJ` is `{"`)."""
    return credential.startswith("eyJ") and credential.count(".") == 2
