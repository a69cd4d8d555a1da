"""`http_client: aiohttp`: a `ClientSession` behind the seam in `__init__.py`; imported
only by a deployment that picks it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping

import aiohttp

from ai_service.config import ProviderSettings
from ai_service.errors import UpstreamTimeout, UpstreamUnavailable
from ai_service.providers.egress import (
    Egress,
    check_proxy_answer,
    egress_of,
    proxy_refused,
    unreachable,
)
from ai_service.providers.http import LibraryClient, UpstreamResponse
from ai_service.providers.http.propagation import with_trace_headers


@contextlib.contextmanager
def _aiohttp_errors(egress: Egress, url: str) -> Iterator[None]:
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"upstream timed out ({type(exc).__name__}) at {url}") from exc
    except aiohttp.ClientHttpProxyError as exc:  # the proxy's answer to CONNECT
        raise proxy_refused(egress, url, exc.status, exc.message) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, unresolvable, TLS verdicts
        raise unreachable(egress, url, exc) from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(
            f"upstream connection failed ({type(exc).__name__}) at {url}"
        ) from exc


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse, egress: Egress, url: str) -> None:
        self._response = response
        self._egress = egress
        self._url = url

    @property
    def status(self) -> int:
        return self._response.status

    def header(self, name: str) -> str | None:
        return self._response.headers.get(name)

    async def read(self) -> bytes:
        with _aiohttp_errors(self._egress, self._url):
            return await self._response.read()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        with _aiohttp_errors(self._egress, self._url):
            async for piece in self._response.content.iter_any():
                yield piece


class AiohttpClient(LibraryClient):
    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings
        self._egress = egress_of(settings)
        self._session: aiohttp.ClientSession | None = None
        # Proxy credentials: aiohttp sends `proxy_headers` with a CONNECT only, so a
        # forwarded (http) request carries its Proxy-Authorization itself.
        proxy = self._egress.proxy
        credentials = proxy.authorization if proxy is not None else None
        authorization = {"proxy-authorization": credentials} if credentials else {}
        tunnelled = settings.base_url.startswith("https://")
        self._proxy_headers = authorization if tunnelled else None
        self._request_headers = {} if tunnelled else authorization
        timeouts = settings.timeouts
        self._timeout = aiohttp.ClientTimeout(
            total=None,  # the call's deadline bounds the whole exchange, not the client
            connect=timeouts.pool + timeouts.connect,
            sock_connect=timeouts.connect,
            sock_read=timeouts.read,
        )

    def _session_now(self) -> aiohttp.ClientSession:
        # A ClientSession must be created inside the running loop it serves.
        if self._session is None:
            pool = self._settings.pool
            connector = aiohttp.TCPConnector(
                limit=pool.max_connections,
                keepalive_timeout=pool.keepalive_expiry_seconds or None,
                enable_cleanup_closed=False,
                ssl=self._egress.tls,
            )
            proxy = self._egress.proxy
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                proxy=None if proxy is None else proxy.url,
                trust_env=False,  # the config read the environment already (egress.trust_env)
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    @contextlib.asynccontextmanager
    async def _send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> AsyncIterator[UpstreamResponse]:
        with _aiohttp_errors(self._egress, url):
            response = await self._session_now().request(
                method,
                url,
                data=body,
                headers={**with_trace_headers(headers), **self._request_headers},
                proxy_headers=self._proxy_headers,
            )
        try:
            check_proxy_answer(self._egress, url, response.status, response.reason or "")
            yield _AiohttpResponse(response, self._egress, url)
        finally:
            response.release()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
