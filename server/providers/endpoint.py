"""One upstream JSON API endpoint: its URL, headers, pooled client and error mapping.

Every adapter posts JSON to one path of its provider and reads either one JSON
object or a stream; what differs between providers is the path, how the key is
sent, what a stream is called, and (Anthropic) a twist in the error mapping.
Those are parameters here; the mechanics exist once.

The path may depend on the call (a deployment or model in the URL, another method for
streams): `fetch` and `stream` then take the `url`. The gateway's identity comes from a
`Credentials` (providers/credentials/): a fixed key, or a token or signature made per
request; a 401 answered to a token that can be renewed is retried once with a new one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from ai_service.config import ProviderSettings
from ai_service.errors import UpstreamError, keep_secret
from ai_service.providers.base import parse_json_body
from ai_service.providers.credentials import Credentials, OutgoingRequest
from ai_service.providers.credentials.static import StaticKey
from ai_service.providers.egress import upstream_headers
from ai_service.providers.http import HttpClient, UpstreamResponse, create_http_client
from ai_service.providers.http.propagation import note_http_status
from ai_service.providers.status_mapping import error_from_status

#: Turns a non-200 answer into the gateway's error (given the provider's name).
ErrorMapper = Callable[[UpstreamResponse, bytes, str], UpstreamError]


def map_by_status(response: UpstreamResponse, body: bytes, provider: str) -> UpstreamError:
    return error_from_status(
        response.status, body, retry_after=response.header("retry-after"), provider=provider
    )


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


class UpstreamEndpoint:
    def __init__(
        self,
        settings: ProviderSettings,
        path: str,
        *,
        stream_accept: str,
        credentials: Callable[[str], dict[str, str]] = bearer,
        auth: Credentials | None = None,
        extra_headers: Mapping[str, str] | None = None,
        map_error: ErrorMapper = map_by_status,
        http: HttpClient | None = None,
    ) -> None:
        """`credentials` shapes the configured `api_key` into headers; `auth`, when
        given, authenticates instead (tokens, signatures)."""
        self.provider = settings.name
        self.url = settings.base_url.rstrip("/") + path
        if auth is None:
            secret = settings.api_key.get_secret_value() if settings.api_key else None
            auth = StaticKey(credentials(secret) if secret else {}, secret)
        self.auth: Credentials = auth
        # User-Agent and Accept-Encoding: gzip, unless the provider's headers say otherwise.
        headers = upstream_headers(
            {"content-type": "application/json", "accept": "application/json"},
            extra_headers or {},
            settings.headers,
            auth.static_headers,
        )
        # Whatever the upstream echoes, callers never see them: every configured header's
        # value (an organisation token, an `api-key`); the credentials keep their own.
        for value in settings.headers.values():
            keep_secret(value)
        self._headers = headers
        self._stream_headers = {**headers, "accept": stream_accept}
        self._map_error = map_error
        self._http = http or create_http_client(settings)

    async def fetch(self, body: bytes, what: str, url: str | None = None) -> dict[str, Any]:
        """POST `body` (to `url`, else the endpoint's); the JSON object answered, or the
        mapped error."""
        url = url or self.url
        async with self._exchange(url, body, self._headers) as response:
            note_http_status(response.status)
            payload = await response.read()
            if response.status != 200:
                raise self._map_error(response, payload, self.provider)
        return parse_json_body(payload, what)

    @contextlib.asynccontextmanager
    async def stream(self, body: bytes, url: str | None = None) -> AsyncIterator[UpstreamResponse]:
        """POST `body` for a stream; a non-200 answer raises the mapped error."""
        async with self._exchange(url or self.url, body, self._stream_headers) as response:
            note_http_status(response.status)
            if response.status != 200:
                payload = await response.read()
                raise self._map_error(response, payload, self.provider)
            yield response

    def _exchange(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """The response to `body`, authenticated. A static credential's request is the
        HTTP client's own exchange: no generator around it, which a held stream would
        keep for its whole life."""
        if not self.auth.dynamic:
            return self._http.post(url, body, headers)
        return self._renewing_exchange(url, body, headers)

    @contextlib.asynccontextmanager
    async def _renewing_exchange(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[UpstreamResponse]:
        """A renewable credential's exchange: a 401 is retried once, with the new one."""
        for attempt in (1, 2):
            sent = await self.auth.authorize(OutgoingRequest(url, body, headers))
            async with self._http.post(url, body, {**headers, **sent}) as response:
                if response.status == 401 and attempt == 1 and self.auth.refused(sent):
                    continue  # the upstream did nothing with a refused request
                yield response
                return

    async def aclose(self) -> None:
        await self.auth.aclose()
        await self._http.aclose()
