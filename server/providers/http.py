"""The one seam between provider adapters and an HTTP client library.

Adapters see `HttpClient.post(...)` returning an `UpstreamResponse` (status,
headers, body bytes or a byte stream) and the gateway's own errors; which library
moves the bytes is a per-provider setting. Two back ends live here:

* `HttpxClient` — the product card's httpx. httpcore loses pool slots when a
  request is cancelled while it waits for a connection (encode/httpcore#1093,
  FACTS.md), and a gateway cancels requests all day, so the send runs shielded and
  a response that arrives after the cancel is closed rather than leaked.
* `AiohttpClient` — aiohttp, which measured ~25x less CPU per request here.

Both translate their library's exceptions to `UpstreamTimeout` /
`UpstreamUnavailable` in exactly one place each (`_httpx_errors`, `_aiohttp_errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import aiohttp
import httpx

from server.config import ProviderSettings
from server.errors import UpstreamTimeout, UpstreamUnavailable


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

    async def aclose(self) -> None: ...


def create_http_client(settings: ProviderSettings) -> HttpClient:
    if settings.http_client == "aiohttp":
        return AiohttpClient(settings)
    return HttpxClient(settings)


# --- httpx ------------------------------------------------------------------------


@contextlib.contextmanager
def _httpx_errors(url: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout(f"upstream timed out ({type(exc).__name__}) at {url}") from exc
    except httpx.HTTPError as exc:
        raise UpstreamUnavailable(
            f"upstream connection failed ({type(exc).__name__}) at {url}"
        ) from exc


class _HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._url = str(response.request.url)

    @property
    def status(self) -> int:
        return self._response.status_code

    def header(self, name: str) -> str | None:
        value: str | None = self._response.headers.get(name)
        return value

    async def read(self) -> bytes:
        with _httpx_errors(self._url):
            return await self._response.aread()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._url):
            async for piece in self._response.aiter_raw():
                yield piece


class HttpxClient:
    def __init__(self, settings: ProviderSettings) -> None:
        timeouts, pool = settings.timeouts, settings.pool
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=timeouts.connect,
                read=timeouts.read,
                write=timeouts.write,
                pool=timeouts.pool,
            ),
            limits=httpx.Limits(
                max_connections=pool.max_connections,
                max_keepalive_connections=pool.max_keepalive_connections,
                keepalive_expiry=pool.keepalive_expiry_seconds,
            ),
            # The gateway's own upstream settings are the only truth: no proxies
            # or certificates picked up from the environment behind our back.
            trust_env=False,
        )

    @contextlib.asynccontextmanager
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[UpstreamResponse]:
        request = self._client.build_request("POST", url, content=body, headers=headers)
        with _httpx_errors(url):
            response = await self._send_shielded(request)
        try:
            yield _HttpxResponse(response)
        finally:
            await response.aclose()

    async def _send_shielded(self, request: httpx.Request) -> httpx.Response:
        # Cancelling httpcore while it waits for a pool slot leaks the slot
        # (encode/httpcore#1093): let the send finish on its own and close
        # whatever response it produces after our caller has gone.
        sending = asyncio.ensure_future(self._client.send(request, stream=True))
        try:
            return await asyncio.shield(sending)
        except asyncio.CancelledError:
            sending.add_done_callback(_close_orphaned_response)
            raise

    async def aclose(self) -> None:
        await self._client.aclose()


_orphan_closers: set[asyncio.Task[None]] = set()


def _close_orphaned_response(sending: asyncio.Future[httpx.Response]) -> None:
    if sending.cancelled() or sending.exception() is not None:
        return
    closer = asyncio.ensure_future(sending.result().aclose())
    _orphan_closers.add(closer)  # keep a reference until done, or the task may vanish
    closer.add_done_callback(_orphan_closers.discard)


# --- aiohttp ----------------------------------------------------------------------


@contextlib.contextmanager
def _aiohttp_errors(url: str) -> Iterator[None]:
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"upstream timed out ({type(exc).__name__}) at {url}") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(
            f"upstream connection failed ({type(exc).__name__}) at {url}"
        ) from exc


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse, url: str) -> None:
        self._response = response
        self._url = url

    @property
    def status(self) -> int:
        return self._response.status

    def header(self, name: str) -> str | None:
        return self._response.headers.get(name)

    async def read(self) -> bytes:
        with _aiohttp_errors(self._url):
            return await self._response.read()

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        with _aiohttp_errors(self._url):
            async for piece in self._response.content.iter_any():
                yield piece


class AiohttpClient:
    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
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
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                trust_env=False,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    @contextlib.asynccontextmanager
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[UpstreamResponse]:
        with _aiohttp_errors(url):
            response = await self._session_now().post(url, data=body, headers=dict(headers))
        try:
            yield _AiohttpResponse(response, url)
        finally:
            response.release()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
