"""`http_client: httpx` and `httpx2`: an `AsyncClient` of either (the same API) behind
the seam in `__init__.py`; imported only by a deployment that picks one of them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from types import ModuleType
from typing import Any

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


class HttpxClient(LibraryClient):
    """An `AsyncClient` of httpx, or of httpx2 (its maintained fork, same API)."""

    def __init__(self, settings: ProviderSettings, library: ModuleType) -> None:
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
