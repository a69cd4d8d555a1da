"""One upstream JSON API endpoint: its URL, headers, pooled client and error mapping.

Every adapter posts JSON to one path of its provider and reads either one JSON
object or a stream; what differs between providers is the path, how the key is
sent, what a stream is called, and (Anthropic) a twist in the error mapping.
Those are parameters here; the mechanics exist once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ai_service.config import ProviderSettings
from ai_service.errors import UpstreamError, keep_secret
from ai_service.providers.base import parse_json_body
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
        extra_headers: Mapping[str, str] | None = None,
        map_error: ErrorMapper = map_by_status,
        http: HttpClient | None = None,
    ) -> None:
        self.provider = settings.name
        self.url = settings.base_url.rstrip("/") + path
        secret = settings.api_key.get_secret_value() if settings.api_key else None
        # User-Agent and Accept-Encoding: gzip, unless the provider's headers say otherwise.
        headers = upstream_headers(
            {"content-type": "application/json", "accept": "application/json"},
            extra_headers or {},
            settings.headers,
        )
        # Whatever the upstream echoes, callers never see them: the key, and every
        # configured header's value (an organisation token, an `api-key`).
        for value in settings.headers.values():
            keep_secret(value)
        if secret:
            keep_secret(secret)
            headers.update(credentials(secret))
        self._headers = headers
        self._stream_headers = {**headers, "accept": stream_accept}
        self._map_error = map_error
        self._http = http or create_http_client(settings)

    async def fetch(self, body: bytes, what: str) -> dict[str, Any]:
        """POST `body`; the JSON object answered, or the mapped error."""
        async with self._http.post(self.url, body, self._headers) as response:
            note_http_status(response.status)
            payload = await response.read()
            if response.status != 200:
                raise self._map_error(response, payload, self.provider)
        return parse_json_body(payload, what)

    @contextlib.asynccontextmanager
    async def stream(self, body: bytes) -> AsyncIterator[UpstreamResponse]:
        """POST `body` for a stream; a non-200 answer raises the mapped error."""
        async with self._http.post(self.url, body, self._stream_headers) as response:
            note_http_status(response.status)
            if response.status != 200:
                payload = await response.read()
                raise self._map_error(response, payload, self.provider)
            yield response

    async def aclose(self) -> None:
        await self._http.aclose()
