"""OAuth access tokens kept fresh: renewed ahead of expiry by one single flight.

A `TokenSource` fetches a token and says how long it lives; `RefreshingToken` holds it
and puts it on requests. Once a token is past its renewal point (at most
`REFRESH_AHEAD_SECONDS` before expiry, and never earlier than half its life) the next
request starts one renewal in the background and goes on with the current token; a
token too close to expiry (`EXPIRY_MARGIN_SECONDS`, for the request's way there and
clock skew) is never sent: requests wait for the renewal, all of them for the same one.
A caller cancelled while waiting leaves the renewal running for the others.

After a 401 the token that was refused is dropped, so the adapter's one retry waits for
a new one. A renewal that fails is an `UpstreamUnavailable` naming its cause; the
source is not asked again for `RETRY_AFTER_FAILURE` seconds (callers meanwhile get the
same failure), so an outage of the token endpoint is not hammered by every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ai_service.errors import UpstreamUnavailable
from ai_service.providers.credentials import OutgoingRequest
from ai_service.secrecy import forget_secret, keep_secret, scrub_secrets

log = logging.getLogger(__name__)

REFRESH_AHEAD_SECONDS = 300.0
EXPIRY_MARGIN_SECONDS = 30.0
RETRY_AFTER_FAILURE = 1.0


class CredentialError(Exception):
    """A credential could not be had; the message says why (it is scrubbed before use)."""


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    #: Seconds it is valid for, from when it was fetched (OAuth's `expires_in`).
    lifetime: float


class TokenSource(Protocol):
    #: What the token is, for messages ("a Microsoft Entra ID token").
    describes: str

    async def fetch(self) -> Token:
        """A new token; `CredentialError` when the source refuses or cannot be reached."""
        ...

    async def aclose(self) -> None: ...


def credential_failure(provider: str, what: str, cause: str) -> UpstreamUnavailable:
    """The error (logged as a WARNING) for a credential that could not be had."""
    cause = scrub_secrets(cause)
    log.warning("upstream credential failed", extra={"provider": provider, "cause": cause})
    return UpstreamUnavailable(f"upstream {provider!r}: {what} could not be obtained: {cause}")


@dataclass(frozen=True, slots=True)
class _Held:
    value: str
    headers: Mapping[str, str]  # one mapping per token: the HTTP client caches its bytes
    renew_at: float  # time.monotonic()
    stale_at: float


class RefreshingToken:
    dynamic = True
    static_headers: Mapping[str, str] = {}

    def __init__(
        self, provider: str, source: TokenSource, header: Callable[[str], Mapping[str, str]]
    ) -> None:
        self._provider = provider
        self._source = source
        self._header = header
        self._held: _Held | None = None
        self._value: str | None = None  # the token last obtained, until replaced
        self._renewal: asyncio.Task[_Held] | None = None
        self._failure: UpstreamUnavailable | None = None
        self._quiet_until = 0.0

    async def authorize(self, request: OutgoingRequest) -> Mapping[str, str]:
        held, now = self._held, time.monotonic()
        if held is not None and now < held.stale_at:
            if now >= held.renew_at and now >= self._quiet_until:
                self._renewing()  # ahead of expiry: this request goes with the current one
            return held.headers
        return (await self._renewed()).headers

    def refused(self, sent: Mapping[str, str]) -> bool:
        held = self._held
        if held is not None and held.headers is sent:
            self._held = None
        return True

    async def aclose(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewal
        await self._source.aclose()

    async def _renewed(self) -> _Held:
        if self._failure is not None and time.monotonic() < self._quiet_until:
            raise UpstreamUnavailable(self._failure.message)
        # Shielded: a caller cancelled while waiting leaves the renewal to the others.
        return await asyncio.shield(self._renewing())

    def _renewing(self) -> asyncio.Task[_Held]:
        if self._renewal is None:
            task = asyncio.get_running_loop().create_task(self._renew())
            task.add_done_callback(self._renewal_done)
            self._renewal = task
        return self._renewal

    def _renewal_done(self, task: asyncio.Task[_Held]) -> None:
        self._renewal = None
        if not task.cancelled():
            task.exception()  # retrieved here: a background renewal nobody awaited

    async def _renew(self) -> _Held:
        started = time.monotonic()
        try:
            token = await self._source.fetch()
        except CredentialError as exc:
            self._failure = credential_failure(self._provider, self._source.describes, str(exc))
            self._quiet_until = time.monotonic() + RETRY_AFTER_FAILURE
            raise self._failure from None
        if not token.value:
            raise credential_failure(self._provider, self._source.describes, "an empty token")
        keep_secret(token.value)
        lifetime = max(token.lifetime, 0.0)
        ahead = min(REFRESH_AHEAD_SECONDS, lifetime / 2)
        margin = min(EXPIRY_MARGIN_SECONDS, lifetime / 4)
        held = _Held(
            token.value,
            self._header(token.value),
            renew_at=started + lifetime - ahead,
            stale_at=started + lifetime - margin,
        )
        self._held, previous, self._value = held, self._value, held.value
        self._failure, self._quiet_until = None, 0.0
        if previous is not None and previous != held.value:
            forget_secret(previous)  # no upstream can echo a token no longer sent
        return held
