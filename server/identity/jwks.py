"""The identity provider's public keys (its JWK Set): fetched, cached, refreshed sparingly.

Fetched through the same HTTP seam as upstreams (`providers.http`), so the configured
proxy and CAs apply. The set is fetched at start (in the background), again in the
background once it is `max_age_seconds` old, and at once when a token names a key id
the set lacks (the provider rotated its keys) — but never more than once per
`refresh_interval_seconds`, and by one fetch however many calls wait for it, so tokens
with forged key ids cannot make the gateway hammer the provider. When the provider
cannot be reached the keys already fetched keep working, and the failure is logged
once per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from ai_service.config import JwtSettings, PoolSettings, ProviderSettings, Timeouts
from ai_service.errors import GatewayError
from ai_service.providers.egress import upstream_headers
from ai_service.providers.http import HttpClient, create_http_client

log = logging.getLogger(__name__)

#: The most of a key set's body read: a JWK Set is a few kilobytes.
MAX_JWKS_BYTES = 1024 * 1024


class JwksUnavailable(Exception):
    """The key set could not be fetched or used; the message says why (no secrets)."""


class Jwks:
    """The identity provider's signing keys by key id."""

    def __init__(self, settings: JwtSettings, client: HttpClient | None = None) -> None:
        self.settings = settings
        self._client = client or create_http_client(jwks_endpoint(settings))
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched = 0.0  # when the keys were last fetched (monotonic); 0: never
        self._attempted = -float("inf")  # when a fetch last started
        self._fetch: asyncio.Task[None] | None = None
        self._logged_failure = -float("inf")
        #: Fetches started (tests and metrics read it).
        self.fetches = 0

    def start(self) -> None:
        """Fetch the keys in the background, so the first token need not wait."""
        self._refresh()

    async def key(self, kid: str | None) -> PyJWK:
        """The key `kid` names (None: the set's only key), or JwksUnavailable."""
        found = self._find(kid)
        now = time.monotonic()
        if found is not None:
            if now - self._fetched > self.settings.max_age_seconds:
                self._refresh()  # in the background: the cached key serves meanwhile
            return found
        fetch = self._refresh()
        if fetch is not None:
            await asyncio.shield(fetch)  # one fetch for every waiter; a cancel leaves it
            found = self._find(kid)
        if found is None:
            raise JwksUnavailable(
                "the identity provider publishes no such key"
                if self._fetched
                else "the identity provider's keys could not be fetched"
            )
        return found

    def _find(self, kid: str | None) -> PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid) if kid is not None else None

    def _refresh(self) -> asyncio.Task[None] | None:
        """The fetch under way, or a new one if the interval allows; None otherwise."""
        if self._fetch is not None and not self._fetch.done():
            return self._fetch
        now = time.monotonic()
        if now - self._attempted < self.settings.refresh_interval_seconds:
            return None
        self._attempted = now
        self.fetches += 1
        self._fetch = asyncio.ensure_future(self._fetch_keys())
        return self._fetch

    async def _fetch_keys(self) -> None:
        url = self.settings.jwks_url
        try:
            async with asyncio.timeout(self.settings.fetch_timeout_seconds):
                body = await self._download(url)
            keys = usable_keys(orjson.loads(body), self.settings.algorithms)
        except (GatewayError, JwksUnavailable, TimeoutError, ValueError) as exc:
            self._failed(exc)
            return
        if not keys:
            self._failed(JwksUnavailable("the key set holds no usable signing key"))
            return
        self._keys = keys
        self._fetched = time.monotonic()
        log.info("identity provider keys fetched", extra={"keys": len(keys), "url": url})

    async def _download(self, url: str) -> bytes:
        async with self._client.get(url, _HEADERS) as response:
            if response.status != 200:
                raise JwksUnavailable(f"HTTP {response.status}")
            body = await response.read()
        if len(body) > MAX_JWKS_BYTES:
            raise JwksUnavailable("the key set is larger than 1 MiB")
        return body

    def _failed(self, error: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged_failure >= self.settings.refresh_interval_seconds:
            self._logged_failure = now
            why = str(error) if not isinstance(error, TimeoutError) else "timed out"
            log.error(
                "cannot fetch the identity provider's keys; the cached keys stay in use",
                extra={"url": self.settings.jwks_url, "error": why, "keys": len(self._keys)},
            )

    async def aclose(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()
        await self._client.aclose()


_HEADERS = upstream_headers({"accept": "application/json"})


def usable_keys(document: Any, algorithms: tuple[str, ...]) -> dict[str | None, PyJWK]:
    """The signing keys of a JWK Set, by key id: public keys of an allowed algorithm only
    (a shared secret, `kty: oct`, is never taken: that is how HS256 forgeries work)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JwksUnavailable("the answer is not a JWK Set (no 'keys' list)")
    keys: dict[str | None, PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, Mapping) or entry.get("kty") == "oct":
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = PyJWK(dict(entry))
        except (PyJWTError, ValueError, TypeError, KeyError):
            continue  # a kind of key this gateway cannot use: the others still serve
        if key.algorithm_name in algorithms:
            keys[key.key_id] = key
    return keys


def jwks_endpoint(settings: JwtSettings) -> ProviderSettings:
    """The key set's URL as an HTTP client's settings: its egress, a small pool, and the
    fetch timeout as every timeout."""
    timeout = settings.fetch_timeout_seconds
    return ProviderSettings(
        name="jwks",
        base_url=settings.jwks_url,
        timeouts=Timeouts(connect=timeout, read=timeout, write=timeout, pool=timeout),
        pool=PoolSettings(max_connections=2, max_keepalive_connections=1),
        egress=settings.egress,
    )
