"""The one seam between provider adapters and an HTTP client library.

Adapters see `HttpClient.post(...)` returning an `UpstreamResponse` (status,
headers, body bytes or a byte stream) and the gateway's own errors; which library
moves the bytes is a per-provider setting (`http_client`). Every client does all of
egress the same way (`egress.py`: an HTTP proxy with CONNECT and Basic auth, the
environment's proxy unless `trust_env: false`, a private CA, client certificates,
TLS 1.2 at least; gzip asked for and decoded, unary and streamed), and all four pass
one conformance suite (tests/system/test_egress.py), so none is refused a setting:

* `h1` (the default) — the gateway's own HTTP/1.1 client (`h1.py`): asyncio
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

Each library lives in its own module (`h1.py`, `httpx_client.py`, `aiohttp_client.py`),
imported only by a deployment that picks it. Its exceptions become `UpstreamTimeout` /
`UpstreamUnavailable` in exactly one place (`_httpx_errors`, `_aiohttp_errors`; `h1`
raises them itself); a connection that could not be made (refused, TLS verdict, proxy
refusal) is worded and logged by `egress.unreachable` / `egress.proxy_refused` for all
of them.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from ai_service.config import ProviderSettings


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


class LibraryClient:
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
    # Each library is imported only by a deployment that picks it: ~2-9 MiB of every
    # worker's memory apiece.
    if settings.http_client in ("httpx", "httpx2"):
        from ai_service.providers.http.httpx_client import HttpxClient

        return HttpxClient(settings, importlib.import_module(settings.http_client))
    from ai_service.providers.http.aiohttp_client import AiohttpClient

    return AiohttpClient(settings)
