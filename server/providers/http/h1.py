"""The gateway's own HTTP/1.1 client: asyncio protocols, the llhttp parser, a LIFO pool.

Why it exists: on the hot path aiohttp's client spends most of its time in Python
(building a `ClientRequest`, multidicts, payload registries, timers), and a unary call
through the gateway paid for it on every request. This client does only what an
upstream JSON POST needs: one write of the request head and body, a C parser
(`httptools`, the llhttp binding uvicorn uses) feeding callbacks, and a pool of
keep-alive connections. The numbers that chose it are in bench/RESULTS.md.

Safety rules, each one tested:

* A connection goes back to the pool only after its response was read to the end
  and neither side asked to close; anything else (cancellation included) closes it,
  so a half-read response can never be read by the next request.
* The pool never holds more than `max_connections` open, and a waiter for a free
  slot gives up after `timeouts.pool`.
* `timeouts.connect`, `.pool` and `.read` (the longest silence while waiting for the
  answer or the next piece of it) apply as configured. `.write` has nothing to bound:
  the request goes to the kernel in one write, and an upstream that stops reading it
  shows up as read silence.
* Through an HTTP proxy (`egress.proxy`), an http upstream's requests are forwarded
  (absolute-form request line) and an https upstream's connections are tunnelled:
  CONNECT, then TLS with the upstream over the tunnel (`loop.start_tls`), end to end.
* Nothing is retried here, not even on a reused connection that closed before
  answering: once the request is written the upstream may have acted on it, and
  whether to try again is the dispatcher's decision. An idle connection the upstream
  closed is noticed (its `connection_lost` has run) and never handed out.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from ai_service.config import ProviderSettings
from ai_service.errors import UpstreamTimeout, UpstreamUnavailable
from ai_service.providers.egress import (
    Egress,
    Proxy,
    check_proxy_answer,
    describe,
    egress_of,
    proxy_refused,
    unreachable,
)
from ai_service.providers.http.propagation import trace_headers
from ai_service.timers import Timers

#: Stop reading from the socket while this much body is buffered and unread.
_HIGH_WATER = 256 * 1024
#: Header mappings whose serialized block is kept (adapters reuse theirs).
_MAX_HEADER_BLOCKS = 64


@dataclass(frozen=True)
class _Origin:
    """Where requests go: one pool of connections per origin."""

    host: str
    port: int
    tls: bool


def _route(url: str, proxy: Proxy | None, method: str = "POST") -> tuple[_Origin, bytes]:
    """The origin of `url`, and its request line and Host header, encoded once per URL;
    through a proxy, an http URL's request line names it whole (the proxy forwards it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamUnavailable(f"not an http(s) URL: {url}")
    tls = parts.scheme == "https"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]
    head = f"host: {host_header}\r\n"
    if proxy is not None and not tls:
        target = f"http://{host_header}{target}"
        if proxy.authorization is not None:
            head += f"proxy-authorization: {proxy.authorization}\r\n"
    request_line = f"{method} {target} HTTP/1.1\r\n"
    origin = _Origin(parts.hostname, parts.port or (443 if tls else 80), tls)
    return origin, (request_line + head).encode("ascii")


class _ProxyAnswer(asyncio.Protocol):
    """The proxy's answer to CONNECT: its status line, once the head has arrived."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.head: asyncio.Future[tuple[int, str]] = loop.create_future()
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n\r\n" in self._buffer and not self.head.done():
            status_line = self._buffer.split(b"\r\n", 1)[0].decode("latin-1")
            version, _, rest = status_line.partition(" ")
            code, _, reason = rest.partition(" ")
            if version.startswith("HTTP/1.") and code.isdigit():
                self.head.set_result((int(code), reason.strip()))
            else:
                self.head.set_exception(ConnectionError("the proxy answered CONNECT with no HTTP"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.head.done():
            self.head.set_exception(
                exc or ConnectionResetError("the proxy closed the connection before answering")
            )


def _header_block(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


class _Connection(asyncio.Protocol):
    """One keep-alive connection, and the response currently being read from it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._timers = Timers.of(loop)  # not a loop timer per wait: see server/timers.py
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._header_pairs: list[tuple[bytes, bytes]] = []
        # A list, not a deque: taken whole, never popped one by one, and a deque keeps a
        # ~0.5 KiB block even empty, for as long as a held stream lasts.
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._timed_out = False
        self._reusable = False
        self._asked = False  # a request is out, its answer not all read yet
        # The response in progress (reset by `send`):
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.error: Exception | None = None

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Also called by hand with the TLS transport of a tunnel (see H1Client._tunnel).
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self._asked:
            self.close()  # bytes while idle in the pool: nothing after them can be trusted
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.complete:  # a whole answer followed by junk is still an answer
                self._fail(UpstreamUnavailable(f"upstream sent malformed HTTP ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and self._delimited_by_close():
            self.complete = True  # a body that ends where the connection ends
        elif not self.complete:
            why = f": {describe(exc, None)}" if isinstance(exc, ssl.SSLError) else ""
            self._fail(UpstreamUnavailable(f"upstream closed the connection mid-response{why}"))
        self._wake()

    # -- httptools callbacks ----------------------------------------------------

    def on_message_begin(self) -> None:
        if self.headers_done:
            # A second answer to one request: stop before it mixes into the first (which
            # stays readable), and never reuse the connection.
            self._asked = False
            self._reusable = False
            raise ValueError("upstream sent an answer nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_pairs.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self._header_pairs.clear()
            return
        self.status = status
        # Asked now: llhttp forgets it once the message is complete.
        self._reusable = self._parser.should_keep_alive()
        self.headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in self._header_pairs
        }
        self._header_pairs.clear()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.headers_done:  # not the end of an interim (1xx) answer
            self.complete = True
            self._asked = False
            self._wake()

    # -- what the client uses ---------------------------------------------------

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self._header_pairs.clear()
        self._chunks.clear()
        self._buffered = 0
        self.status, self.headers = 0, {}
        self.headers_done = self.complete = False
        self.error = None
        self._asked = True
        self.transport.write(request)

    async def wait(self, max_silence: float, url: str) -> None:
        """Until the parser has news, the connection fails, or `max_silence` s pass."""
        if self.error is None:
            waiter = self._waiter = self._loop.create_future()
            timer = self._timers.call_later(max_silence, self._time_out)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self.error is not None:
            raise self.error
        if self._timed_out:
            self._timed_out = False
            raise UpstreamTimeout(f"upstream timed out (no data for {max_silence:g} s) at {url}")

    def take_chunks(self) -> list[bytes]:
        chunks, self._chunks = self._chunks, []
        self.drop_unread()
        return chunks

    def drop_unread(self) -> None:
        """Forget what was read ahead and read on: a connection going back to the pool
        must notice its upstream closing it, and read its next answer."""
        self._chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def keep_alive(self) -> bool:
        return self.complete and not self.closed and self._reusable

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _delimited_by_close(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get(
            "transfer-encoding", ""
        )

    def _time_out(self) -> None:
        self._timed_out = True
        self._wake()

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _decoder(encoding: str | None, url: str) -> Any:
    """A zlib decompressor for a compressed body (never asked for, but accepted), or None."""
    if not encoding or encoding == "identity":
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    raise UpstreamUnavailable(
        f"upstream answered with unsupported content-encoding {encoding!r} at {url}"
    )


class _Response:
    """The `UpstreamResponse` of one exchange; reads from the connection's buffer."""

    __slots__ = ("connection", "read_timeout", "status", "url")

    def __init__(self, connection: _Connection, url: str, read_timeout: float) -> None:
        self.connection = connection
        self.url = url
        self.read_timeout = read_timeout
        self.status = connection.status

    def header(self, name: str) -> str | None:
        return self.connection.headers.get(name.lower())

    async def read(self) -> bytes:
        conn = self.connection
        parts: list[bytes] = []
        while not conn.complete:
            # Taken as they arrive: a body above the read-ahead limit pauses reading
            # until what was read is taken.
            parts += conn.take_chunks()
            await conn.wait(self.read_timeout, self.url)
        parts += conn.take_chunks()
        body = b"".join(parts)
        decoder = _decoder(conn.headers.get("content-encoding"), self.url)
        return body if decoder is None else self.inflate(decoder, body) + decoder.flush()

    def iter_bytes(self) -> AsyncIterator[bytes]:
        return _Body(self)

    def inflate(self, decoder: Any, data: bytes) -> bytes:
        try:
            return bytes(decoder.decompress(data))
        except zlib.error as exc:
            raise UpstreamUnavailable(
                f"upstream sent a corrupt compressed body at {self.url}"
            ) from exc


class _Body:
    """A response body as it arrives: an async iterator object, not a generator, so an
    adapter that stops at the provider's end marker leaves nothing to finalize."""

    __slots__ = ("_decoder", "_ended", "_response")

    def __init__(self, response: _Response) -> None:
        self._response = response
        self._decoder = _decoder(response.header("content-encoding"), response.url)
        self._ended = False

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        response, decoder = self._response, self._decoder
        conn = response.connection
        while not self._ended:
            chunks = conn.take_chunks()
            if chunks:
                piece = b"".join(chunks)
                return piece if decoder is None else response.inflate(decoder, piece)
            if conn.complete:
                self._ended = True
                if decoder is not None:
                    return bytes(decoder.flush())
            else:
                await conn.wait(response.read_timeout, response.url)
        raise StopAsyncIteration


class _Pool:
    """The connections of one origin: idle ones (most recent last), and waiters for a slot."""

    def __init__(self, origin: _Origin, max_open: int) -> None:
        self.origin = origin
        self.max_open = max_open
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def wake_one(self) -> None:
        """A slot or an idle connection came free: the longest waiter tries again."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def wait_for_slot(self, deadline: float) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.wake_one()  # woken, but leaving: pass the wake-up on
            else:
                waiter.cancel()
            raise


class _Exchange:
    """`async with client.post(...) as response`: the request sent and the response's
    head read on entry, the connection given back (or dropped, if the body was not read
    to its end) on exit. A class, not a generator context manager: one per call."""

    __slots__ = ("_client", "_conn", "_pool", "_request", "_url")

    def __init__(self, client: H1Client, pool: _Pool, url: str, request: bytes) -> None:
        self._client = client
        self._pool = pool
        self._url = url
        self._request = request

    async def __aenter__(self) -> _Response:
        client = self._client
        self._conn = await client._exchange(self._pool, self._url, self._request)
        self._request = b""  # sent: not kept for as long as the body is read
        return _Response(self._conn, self._url, client._read_timeout)

    async def __aexit__(self, *exc_info: object) -> None:
        self._client._release(self._pool, self._conn)


class H1Client:
    """An `HttpClient` for HTTP/1.1 upstreams: a pool per origin, `max_connections` each."""

    def __init__(self, settings: ProviderSettings) -> None:
        self._max_open = settings.pool.max_connections
        self._max_idle = settings.pool.max_keepalive_connections
        self._expiry = settings.pool.keepalive_expiry_seconds
        self._connect_timeout = settings.timeouts.connect
        self._read_timeout = settings.timeouts.read
        self._pool_timeout = settings.timeouts.pool
        self._pools: dict[_Origin, _Pool] = {}
        self._routes: dict[str, tuple[_Pool, bytes]] = {}
        self._header_blocks: dict[int, tuple[Mapping[str, str], bytes]] = {}
        self._egress: Egress = egress_of(settings)
        self._closed = False

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> _Exchange:
        pool, head = self._routes.get(url) or self._route(url)
        request = b"".join(
            (
                head,
                self._header_block(headers),
                _header_block(trace_headers()),
                b"content-length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        return _Exchange(self, pool, url, request)

    def get(self, url: str, headers: Mapping[str, str]) -> _Exchange:
        # Rare (an identity provider's key set): its request head is not kept.
        origin, head = _route(url, self._egress.proxy, "GET")
        request = b"".join((head, _header_block(headers), _header_block(trace_headers()), b"\r\n"))
        return _Exchange(self, self._pool(origin), url, request)

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            while pool.idle:
                self._discard(pool, pool.idle.pop())

    # -- one exchange -----------------------------------------------------------

    async def _exchange(self, pool: _Pool, url: str, request: bytes) -> _Connection:
        """Send `request`; the connection once the response's head has arrived."""
        conn = await self._acquire(pool, url)
        try:
            conn.send(request)
            while not conn.headers_done:
                await conn.wait(self._read_timeout, url)
            check_proxy_answer(self._egress, url, conn.status, "")
        except BaseException:  # failures, timeouts, cancellation: the connection is done
            self._discard(pool, conn)
            raise
        return conn

    # -- the pool ---------------------------------------------------------------

    def _route(self, url: str) -> tuple[_Pool, bytes]:
        origin, head = _route(url, self._egress.proxy)
        pool = self._pool(origin)
        self._routes[url] = (pool, head)
        return pool, head

    def _pool(self, origin: _Origin) -> _Pool:
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(origin, self._max_open)
        return pool

    async def _acquire(self, pool: _Pool, url: str) -> _Connection:
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            if self._closed:
                raise UpstreamUnavailable(f"the HTTP client of {url} is closed")
            now = loop.time()
            while pool.idle:
                conn = pool.idle.pop()
                if not conn.closed and (not self._expiry or now - conn.idle_since < self._expiry):
                    return conn
                self._discard(pool, conn)
            if pool.open < pool.max_open:
                pool.open += 1
                try:
                    return await self._connect(pool.origin, url)
                except BaseException:
                    pool.open -= 1
                    pool.wake_one()
                    raise
            deadline = deadline or now + self._pool_timeout
            try:
                await pool.wait_for_slot(deadline)
            except TimeoutError as exc:
                raise UpstreamTimeout(
                    f"upstream timed out (no free connection in {self._pool_timeout:g} s) at {url}"
                ) from exc

    async def _connect(self, origin: _Origin, url: str) -> _Connection:
        loop = asyncio.get_running_loop()
        proxy, tls = self._egress.proxy, self._egress.tls if origin.tls else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                if proxy is not None and tls is not None:
                    return await self._tunnel(loop, proxy, origin, tls, url)
                host, port = (proxy.host, proxy.port) if proxy else (origin.host, origin.port)
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
                return conn
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream timed out (connect) at {url}") from exc
        except OSError as exc:  # refused, unreachable, TLS failures (ssl.SSLError)
            raise unreachable(self._egress, url, exc) from exc

    async def _tunnel(
        self,
        loop: asyncio.AbstractEventLoop,
        proxy: Proxy,
        origin: _Origin,
        tls: ssl.SSLContext,
        url: str,
    ) -> _Connection:
        """A connection to `origin` through a CONNECT tunnel, TLS end to end inside it."""
        transport, answer = await loop.create_connection(
            lambda: _ProxyAnswer(loop), proxy.host, proxy.port
        )
        try:
            authority = f"[{origin.host}]" if ":" in origin.host else origin.host
            authority += f":{origin.port}"
            request = f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n"
            if proxy.authorization is not None:
                request += f"proxy-authorization: {proxy.authorization}\r\n"
            transport.write(request.encode("ascii") + b"\r\n")
            status, reason = await answer.head
            if status != 200:
                raise proxy_refused(self._egress, url, status, reason)
            conn = _Connection(loop)
            secured = await loop.start_tls(transport, conn, tls, server_hostname=origin.host)
            if secured is None:  # only when the loop closes under us
                raise ConnectionResetError("the tunnel closed during the TLS handshake")
            conn.connection_made(secured)
            return conn
        except BaseException:
            transport.abort()
            raise

    def _release(self, pool: _Pool, conn: _Connection) -> None:
        if conn.keep_alive() and not self._closed and len(pool.idle) < self._max_idle:
            # The answer is whole, but its reader may have left before taking the last
            # of it, with reading paused at the read-ahead limit.
            conn.drop_unread()
            conn.idle_since = asyncio.get_running_loop().time()
            pool.idle.append(conn)
            pool.wake_one()
        else:
            self._discard(pool, conn)

    def _discard(self, pool: _Pool, conn: _Connection) -> None:
        conn.close()
        pool.open -= 1
        pool.wake_one()

    # -- request heads ----------------------------------------------------------

    def _header_block(self, headers: Mapping[str, str]) -> bytes:
        """The header lines of `headers`, serialized once per mapping (adapters reuse theirs)."""
        cached = self._header_blocks.get(id(headers))
        if cached is not None and cached[0] is headers:
            return cached[1]
        block = _header_block(headers)
        if len(self._header_blocks) >= _MAX_HEADER_BLOCKS:
            # Signed requests carry new headers each time: the cache keeps the reused ones.
            self._header_blocks.clear()
        self._header_blocks[id(headers)] = (headers, block)
        return block
