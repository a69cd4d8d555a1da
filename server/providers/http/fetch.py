"""Fetching an image or document a caller gave by URL, with guards (server-side request forgery).

A provider that takes only bytes (Ollama's images, OpenAI's documents) gets a URL
part fetched by the gateway, and the gateway must not become a way into its own
network. So:

* only `http` and `https`;
* every address the host resolves to (or an address given literally) must be a
  public one: loopback, private (RFC 1918, unique-local), link-local (with the
  cloud metadata address 169.254.169.254), shared (100.64/10), multicast,
  reserved and unspecified addresses are refused, unless `allowed_networks`
  names them. The connection goes to an address that was checked (the resolver
  is the guard), so a DNS answer that changes between check and use cannot slip
  through;
* redirects are followed by hand, at most `max_redirects`, each checked as the
  first URL was;
* the body is read up to `max_bytes` and no further, within `timeout_seconds`
  for the whole fetch, and its media type must be one the part may have.

Every refusal is an `InvalidRequest` naming the part's field: it is the caller's
URL, and it costs no upstream call.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from ai_service.config import MediaFetchSettings
from ai_service.errors import InvalidRequest
from ai_service.providers.http.address_guard import ForbiddenAddress, forbidden_reason

if TYPE_CHECKING:
    import aiohttp

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    media_type: str


class MediaFetcher:
    """Fetches part URLs under the configured guards; one connection pool for the gateway."""

    def __init__(self, settings: MediaFetchSettings | None = None) -> None:
        self.settings = settings or MediaFetchSettings()
        self._session: aiohttp.ClientSession | None = None

    def configure(self, settings: MediaFetchSettings) -> None:
        """Apply a reloaded configuration (a new pool, its resolver guarding anew)."""
        if settings != self.settings:
            self.settings = settings
            old, self._session = self._session, None
            if old is not None:
                asyncio.get_running_loop().create_task(old.close())

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            from ai_service.providers.http.guarded_session import guarded_session

            self._session = guarded_session(self.settings)
        return self._session

    async def fetch(self, url: str, field: str, media_types: frozenset[str]) -> Fetched:
        """The body at `url`, of one of `media_types`; InvalidRequest on `field` otherwise."""
        settings = self.settings
        if not settings.enabled:
            raise InvalidRequest(
                field, "is a URL this model's provider cannot fetch, and media_fetch is off"
            )
        try:
            async with asyncio.timeout(settings.timeout_seconds):
                return await self._follow(url, field, media_types)
        except TimeoutError:
            raise InvalidRequest(
                field, f"could not be fetched within {settings.timeout_seconds:g}s"
            ) from None

    async def _follow(self, url: str, field: str, media_types: frozenset[str]) -> Fetched:
        import aiohttp  # here, not at the top: only a gateway that fetches loads it

        for _ in range(self.settings.max_redirects + 1):
            self._check_url(url, field)
            try:
                async with self._session_now().get(url, allow_redirects=False) as response:
                    if response.status in _REDIRECTS and "Location" in response.headers:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    return await self._body(response, field, media_types)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, ForbiddenAddress):
                    raise InvalidRequest(field, f"may not be fetched: {exc.os_error}") from None
                raise InvalidRequest(field, f"could not be fetched ({exc.os_error})") from None
            except aiohttp.ClientError as exc:
                raise InvalidRequest(
                    field, f"could not be fetched ({type(exc).__name__})"
                ) from None
        raise InvalidRequest(field, f"redirects more than {self.settings.max_redirects} times")

    def _check_url(self, url: str, field: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(field, "leads to a URL that is not http or https")
        try:
            literal = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        reason = forbidden_reason(literal, self.settings)  # literals skip the resolver
        if reason is not None:
            raise InvalidRequest(field, f"may not be fetched: {reason}")

    async def _body(
        self, response: aiohttp.ClientResponse, field: str, media_types: frozenset[str]
    ) -> Fetched:
        if response.status != 200:
            raise InvalidRequest(field, f"could not be fetched: HTTP {response.status}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media_type not in media_types:
            shown = ", ".join(sorted(media_types))
            raise InvalidRequest(
                field, f"serves {media_type or 'no media type'}; expected one of {shown}"
            )
        limit = self.settings.max_bytes
        if (response.content_length or 0) > limit:
            raise InvalidRequest(
                field, f"serves {response.content_length} bytes; the limit is {limit} bytes"
            )
        body = bytearray()
        async for piece in response.content.iter_chunked(64 * 1024):
            body += piece
            if len(body) > limit:
                raise InvalidRequest(field, f"serves more than {limit} bytes, the limit")
        return Fetched(bytes(body), media_type)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
