"""The one seam between provider adapters and an HTTP client library.

Adapters see `HttpClient.post(...)` returning an `UpstreamResponse` (status,
headers, body bytes or a byte stream) and the gateway's own errors; which library
moves the bytes is a per-provider setting (`http_client`). Every client does all of
egress the same way (`egress.py`: an HTTP proxy with CONNECT and Basic auth, the
environment's proxy unless `trust_env: false`, a private CA, client certificates,
TLS 1.2 at least; gzip asked for and decoded, unary and streamed), and all four pass
one conformance suite (tests/test_egress.py), so none is refused a setting:

* `h1` (the default) — the gateway's own HTTP/1.1 client (`h1_client.py`): asyncio
  protocols, the llhttp parser, a LIFO keep-alive pool, CONNECT tunnels through
  `loop.start_tls`. The cheapest: ~36 µs CPU per small request against aiohttp's ~97,
  httpx2's ~630 and httpx's ~9,000, measured side by side (bench/RESULTS.md, "The
  default HTTP client"); a unary call through the whole gateway went from ~1,650 to
  ~2,800 RPS with it.
* `aiohttp` — the fastest library client, and it survived 13,760 random cancels
  under pool contention with its pool intact.
* `httpx2` — the product card's httpx interface in its maintained fork, which
  fixed the pool-slot leak on cancelled requests (encode/httpcore#1093).
* `httpx` — the card's own client, kept for comparison in benchmarks. It still
  has #1093, and the workaround of shielding each send was measured worse here:
  cancelled calls still reach the upstream and queue ahead of live ones, so a storm
  of cancels ends in pool timeouts (after ~1,300 cancels with 10 connections, where
  aiohttp and httpx2 passed 12,000+). Not for production.

Each library's exceptions become `UpstreamTimeout` / `UpstreamUnavailable` in
exactly one place (`_httpx_errors`, `_aiohttp_errors`; `h1` raises them itself); a
connection that could not be made (refused, TLS verdict, proxy refusal) is worded
and logged by `egress.unreachable` / `egress.proxy_refused` for all of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from types import ModuleType
from typing import Any, Protocol

import aiohttp
import httpx
import httpx2

from ai_service.config import ProviderSettings
from ai_service.errors import UpstreamTimeout, UpstreamUnavailable
from ai_service.providers.egress import (
    Egress,
    check_proxy_answer,
    egress_of,
    proxy_refused,
    unreachable,
)
from ai_service.providers.http.propagation import with_trace_headers


class UpstreamResponse(Protocol):
    """An upstream HTTP response whose body has not been read yet."""

    @property
    def status(self) -> int: ...

    def header(self, name: str) -> str | None:
        """A response header, looked up case-insensitively."""
        ...

    async def read(self) -> bytes:
        """The whole body."""
        ...

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in pieces of any size."""
        ...


class HttpClient(Protocol):
    """A pooled HTTP client shared by every call to one upstream."""

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """POST `body`; the response (and its connection) is released on exit."""
        ...

    def get(
        self, url: str, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """GET `url` (an identity provider's key set, say); released on exit like `post`."""
        ...

    async def aclose(self) -> None: ...


class _LibraryClient:
    """`post` and `get` of a library client, both through its one `_send`."""

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        return self._send("POST", url, body, headers)

    def get(
        self, url: str, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        return self._send("GET", url, None, headers)

    def _send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        raise NotImplementedError


def create_http_client(settings: ProviderSettings) -> HttpClient:
    if settings.http_client == "h1":
        from ai_service.providers.http.h1 import H1Client

        return H1Client(settings)
    if settings.http_client == "httpx":
        return HttpxClient(settings, httpx)
    if settings.http_client == "httpx2":
        return HttpxClient(settings, httpx2)
    return AiohttpClient(settings)


# --- httpx and httpx2 (the same API) ------------------------------------------------


@contextlib.contextmanager
def _httpx_errors(library: ModuleType, egress: Egress, url: str) -> Iterator[None]:
    try:
        yield
    except library.TimeoutException as exc:
        raise UpstreamTimeout(f"upstream timed out ({type(exc).__name__}) at {url}") from exc
    except library.ProxyError as exc:  # the proxy's answer to CONNECT: "407 Proxy Auth..."
        code, _, reason = str(exc).partition(" ")
        if not code.isdigit():
            raise unreachable(egress, url, exc) from exc
        raise proxy_refused(egress, url, int(code), reason) from exc
    except library.ConnectError as exc:  # refused, unresolvable, TLS verdicts
        raise unreachable(egress, url, exc) from exc
    except library.HTTPError as exc:
        raise UpstreamUnavailable(
            f"upstream connection failed ({type(exc).__name__}) at {url}"
        ) from exc


class _HttpxResponse:
    def __init__(self, library: ModuleType, egress: Egress, response: Any) -> None:
        self._library = library
        self._egress = egress
        self._response = response
        self._url = str(response.request.url)

    @property
    def status(self) -> int:
        status: int = self._response.status_code
        return status

    def header(self, name: str) -> str | None:
        value: str | None = self._response.headers.get(name)
        return value

    async def read(self) -> bytes:
        with _httpx_errors(self._library, self._egress, self._url):
            body: bytes = await self._response.aread()
            return body

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._library, self._egress, self._url):
            async for piece in self._response.aiter_bytes():  # decoded (gzip), unlike _raw
                yield piece


class HttpxClient(_LibraryClient):
    """An `AsyncClient` of httpx, or of httpx2 (its maintained fork, same API)."""

    def __init__(self, settings: ProviderSettings, library: ModuleType = httpx) -> None:
        timeouts, pool = settings.timeouts, settings.pool
        self._library = library
        self._egress = egress = egress_of(settings)
        proxy = egress.proxy
        self._client = library.AsyncClient(
            proxy=None
            if proxy is None
            else library.Proxy(
                proxy.url,
                auth=None if proxy.username is None else (proxy.username, proxy.password or ""),
            ),
            verify=egress.tls,
            timeout=library.Timeout(
                connect=timeouts.connect,
                read=timeouts.read,
                write=timeouts.write,
                pool=timeouts.pool,
            ),
            limits=library.Limits(
                max_connections=pool.max_connections,
                max_keepalive_connections=pool.max_keepalive_connections,
                keepalive_expiry=pool.keepalive_expiry_seconds,
            ),
            # The config already read the environment (egress.trust_env): nothing more
            # is picked up from it behind the settings' back.
            trust_env=False,
        )

    @contextlib.asynccontextmanager
    async def _send(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]
    ) -> AsyncIterator[UpstreamResponse]:
        request = self._client.build_request(
            method, url, content=body, headers=with_trace_headers(headers)
        )
        with _httpx_errors(self._library, self._egress, url):
            response = await self._client.send(request, stream=True)
        try:
            check_proxy_answer(self._egress, url, response.status_code, response.reason_phrase)
            yield _HttpxResponse(self._library, self._egress, response)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()


# --- aiohttp ----------------------------------------------------------------------


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


class AiohttpClient(_LibraryClient):
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
