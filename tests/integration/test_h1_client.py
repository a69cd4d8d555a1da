"""The gateway's own HTTP/1.1 client (`server/providers/http/h1.py`), against real servers.

The simulator covers the ordinary exchanges; a scripted upstream (a real TCP server
that answers each request with bytes given by the test) covers the HTTP/1.1 shapes
the simulator never sends: chunked and close-delimited bodies, gzip, an interim
100 answer, `Connection: close`, an idle connection closed by the upstream, garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from ai_service.config import ProviderSettings
from ai_service.errors import UpstreamTimeout, UpstreamUnavailable
from ai_service.providers.http.h1 import H1Client
from ai_service.simulator import Simulator
from tests.certs import make_certificates
from tests.conftest import PROVIDER_SECRET, until

HEADERS = {"content-type": "application/json", "authorization": f"Bearer {PROVIDER_SECRET}"}


def chat_body(prompt: str = "hello", *, stream: bool = False) -> bytes:
    body = {"model": "sim-gpt-1", "messages": [{"role": "user", "content": prompt}]}
    return orjson.dumps({**body, "stream": True} if stream else body)


@contextlib.asynccontextmanager
async def h1_client(base_url: str, **settings: object) -> AsyncIterator[H1Client]:
    client = H1Client(
        ProviderSettings.model_validate({"name": "up", "base_url": base_url, **settings})
    )
    try:
        yield client
    finally:
        await client.aclose()


def only_pool(client: H1Client) -> Any:
    (pool,) = client._pools.values()
    return pool


def pool_of(client: H1Client) -> tuple[int, int]:
    """(open, idle) connections of the client's only origin."""
    pool = only_pool(client)
    return pool.open, len(pool.idle)


# -- against the simulator ----------------------------------------------------------


async def test_sequential_requests_reuse_one_keep_alive_connection(simulator: Simulator) -> None:
    async with h1_client(simulator.base_url) as client:
        url = f"{simulator.base_url}/v1/chat/completions"
        for _ in range(5):
            async with client.post(url, chat_body(), HEADERS) as response:
                assert response.status == 200
                assert response.header("Content-Type") == "application/json"
                answer = orjson.loads(await response.read())
            assert answer["choices"][0]["message"]["content"] == "You said: hello"
        assert pool_of(client) == (1, 1)
        assert simulator.stats.connections_open == 1


async def test_a_stream_arrives_in_pieces_and_an_unread_rest_closes_the_connection(
    simulator: Simulator,
) -> None:
    simulator.config.tokens_per_second = 200
    async with h1_client(simulator.base_url) as client:
        url = f"{simulator.base_url}/v1/chat/completions"
        async with client.post(url, chat_body("/tokens 20 s", stream=True), HEADERS) as response:
            pieces = [piece async for piece in response.iter_bytes()]
        assert len(pieces) > 1 and b"".join(pieces).endswith(b"data: [DONE]\n\n")
        assert pool_of(client) == (1, 1)  # read to the end: kept
        async with client.post(url, chat_body("/tokens 20 s", stream=True), HEADERS) as response:
            async for _ in response.iter_bytes():
                break  # leave with most of the stream unread
        assert pool_of(client) == (0, 0)  # never handed to the next request half-read


async def test_the_pool_never_opens_more_than_max_connections(simulator: Simulator) -> None:
    simulator.config.latency_ms = 30
    async with h1_client(simulator.base_url, pool={"max_connections": 3}) as client:
        url = f"{simulator.base_url}/v1/chat/completions"
        most = 0

        async def one() -> None:
            nonlocal most
            async with client.post(url, chat_body(), HEADERS) as response:
                most = max(most, simulator.stats.connections_open)
                assert response.status == 200
                await response.read()

        await asyncio.gather(*(one() for _ in range(20)))
        assert most == 3
        assert pool_of(client) == (3, 3)


async def test_waiting_for_a_connection_gives_up_after_the_pool_timeout(
    simulator: Simulator,
) -> None:
    simulator.config.latency_ms = 1000
    async with h1_client(
        simulator.base_url, pool={"max_connections": 1}, timeouts={"pool": 0.2}
    ) as client:
        url = f"{simulator.base_url}/v1/chat/completions"
        holder = asyncio.create_task(_read_all(client, url))
        await until(lambda: bool(client._pools) and pool_of(client)[0] == 1, "the one connection")
        with pytest.raises(UpstreamTimeout, match="no free connection"):
            await _read_all(client, url)
        assert await holder


async def test_a_silent_upstream_times_out_and_its_connection_is_dropped(
    simulator: Simulator,
) -> None:
    simulator.config.latency_ms = 2000
    async with h1_client(simulator.base_url, timeouts={"read": 0.2}) as client:
        url = f"{simulator.base_url}/v1/chat/completions"
        with pytest.raises(UpstreamTimeout, match=r"no data for 0\.2 s"):
            await _read_all(client, url)
        assert pool_of(client) == (0, 0)


async def test_cancelling_while_waiting_for_a_slot_or_an_answer_frees_the_slot(
    simulator: Simulator,
) -> None:
    simulator.config.latency_ms = 200
    async with h1_client(simulator.base_url, pool={"max_connections": 1}) as client:
        url = f"{simulator.base_url}/v1/chat/completions"
        calls = [asyncio.create_task(_read_all(client, url)) for _ in range(3)]
        await until(  # one holds the connection, two wait for it
            lambda: bool(client._pools) and len(only_pool(client).waiters) == 2, "two waiting"
        )
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        assert pool_of(client) == (0, 0)
        simulator.config.latency_ms = 0
        assert await _read_all(client, url)


async def test_a_refused_connection_is_upstream_unavailable() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    async with h1_client(f"http://127.0.0.1:{port}") as client:
        with pytest.raises(UpstreamUnavailable, match="connection failed"):
            await _read_all(client, f"http://127.0.0.1:{port}/v1/chat/completions")
        assert pool_of(client) == (0, 0)


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(
    simulator: Simulator,
) -> None:
    async with h1_client(simulator.base_url) as client:
        url = f"{simulator.base_url}/v1/chat/completions"
        before = simulator.stats.total_requests
        with pytest.raises(ValueError, match="line break"):
            async with client.post(url, chat_body(), {"x-evil": "a\r\nx-injected: 1"}):
                pass
        assert simulator.stats.total_requests == before


async def _read_all(client: H1Client, url: str) -> bytes:
    async with client.post(url, chat_body(), HEADERS) as response:
        return await response.read()


# -- against a scripted upstream -----------------------------------------------------

Script = Callable[[int], bytes | None]
StartScripted = Callable[..., Awaitable[str]]


@pytest.fixture
async def scripted() -> AsyncIterator[StartScripted]:
    """Start a TCP server answering request n with `script(n)`; None closes the connection.

    An answer that names neither content-length nor chunked encoding is delimited by
    the end of the connection, so the server closes after sending it.
    """
    servers: list[asyncio.Server] = []

    async def start(script: Script, *, tls: ssl.SSLContext | None = None) -> str:
        count = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal count
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next(
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    await reader.readexactly(length)
                    count += 1
                    answer = script(count)
                    if answer is None:
                        break
                    writer.write(answer)
                    await writer.drain()
                    said = answer.lower()
                    if b"content-length" not in said and b"chunked" not in said:
                        break
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        return f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:" + str(
            server.sockets[0].getsockname()[1]
        )

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def answer(body: bytes, *extra: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_chunked_and_close_delimited_bodies_are_read_whole(scripted: StartScripted) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    until_close = b"HTTP/1.1 200 OK\r\n\r\nto the end"
    base = await scripted(lambda n: chunked if n == 1 else until_close)
    async with h1_client(base) as client:
        assert await _read_all(client, f"{base}/a") == b"hello world"
        assert pool_of(client) == (1, 1)
        assert await _read_all(client, f"{base}/a") == b"to the end"
        assert pool_of(client) == (0, 0)  # ended by the close: nothing to keep


async def test_gzip_bodies_and_interim_answers_are_handled(scripted: StartScripted) -> None:
    packed = gzip.compress(b'{"ok": true}')
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    base = await scripted(lambda n: interim + answer(packed, "content-encoding: gzip"))
    async with h1_client(base) as client:
        assert await _read_all(client, f"{base}/a") == b'{"ok": true}'
        async with client.post(f"{base}/a", b"{}", {}) as response:
            assert response.status == 200
            assert b"".join([p async for p in response.iter_bytes()]) == b'{"ok": true}'


async def test_connection_close_and_an_upstream_idle_close_open_a_fresh_connection(
    scripted: StartScripted,
) -> None:
    # Request 1 says `connection: close`; request 2 is kept, but the upstream drops the
    # connection while it idles; request 3 must not be sent on it.
    def script(n: int) -> bytes | None:
        return answer(b"one", "connection: close") if n == 1 else answer(b"again")

    base = await scripted(script)
    async with h1_client(base) as client:
        assert await _read_all(client, f"{base}/a") == b"one"
        assert pool_of(client) == (0, 0)
        assert await _read_all(client, f"{base}/a") == b"again"
        (pool,) = client._pools.values()
        transport = pool.idle[0].transport
        assert transport is not None
        # The upstream's idle timeout, simulated from our side of the socket.
        transport.abort()
        await until(lambda: pool.idle[0].closed, "the connection seen closed")
        assert await _read_all(client, f"{base}/a") == b"again"


async def test_malformed_or_missing_answers_are_upstream_unavailable(
    scripted: StartScripted,
) -> None:
    base = await scripted(lambda n: b"NOT HTTP AT ALL\r\n\r\n" if n == 1 else None)
    async with h1_client(base) as client:
        with pytest.raises(UpstreamUnavailable, match="malformed HTTP"):
            await _read_all(client, f"{base}/a")
        with pytest.raises(UpstreamUnavailable, match="closed the connection"):
            await _read_all(client, f"{base}/a")
        assert pool_of(client) == (0, 0)


async def test_https_upstreams_are_verified_against_the_trusted_authorities(
    scripted: StartScripted,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    certs = make_certificates(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs.server_cert, certs.server_key)
    base = await scripted(lambda n: answer(b"secret"), tls=tls)

    async with h1_client(base) as untrusting:
        with pytest.raises(UpstreamUnavailable, match="certificate verify failed"):
            await _read_all(untrusting, f"{base}/a")

    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca))  # what create_default_context trusts
    async with h1_client(base) as trusting:
        assert await _read_all(trusting, f"{base}/a") == b"secret"


async def test_a_large_body_read_slowly_pauses_the_socket_and_arrives_whole(
    scripted: StartScripted,
) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB, far above the read-ahead limit
    base = await scripted(lambda n: answer(big))
    async with h1_client(base) as client:
        async with client.post(f"{base}/a", b"{}", {}) as response:
            received = bytearray()
            async for piece in response.iter_bytes():
                received += piece
                await asyncio.sleep(0.001)  # a slow reader: the buffer fills, reading pauses
        assert bytes(received) == big
        assert pool_of(client) == (1, 1)


async def test_a_body_above_the_read_ahead_limit_is_read_whole_at_once(
    scripted: StartScripted,
) -> None:
    # A unary answer (an echo of a long prompt) larger than what is read ahead: `read()`
    # must take what arrived as it arrives, or reading stays paused until the timeout.
    big = bytes(range(256)) * 4096  # 1 MiB
    base = await scripted(lambda n: answer(big))
    async with h1_client(base, timeouts={"read": 5}) as client:
        async with client.post(f"{base}/a", b"{}", {}) as response:
            assert await response.read() == big
        assert pool_of(client) == (1, 1)


async def test_a_connection_pooled_with_reading_paused_reads_its_next_answer(
    scripted: StartScripted,
) -> None:
    # One byte over the read-ahead limit: reading pauses as the answer's last byte lands.
    big = b"x" * (256 * 1024 + 1)
    base = await scripted(lambda n: answer(big if n == 1 else b"small"))
    async with h1_client(base, timeouts={"read": 3}) as client:
        async with client.post(f"{base}/a", b"{}", {}) as response:
            for _ in range(500):  # the whole answer lands, unread
                if response.connection.complete:
                    break
                await asyncio.sleep(0.01)
            assert response.connection.complete and response.connection._paused
        assert pool_of(client) == (1, 1)  # whole, so the connection is kept ...
        async with asyncio.timeout(2):  # ... and reads again: not the 3 s read timeout
            assert await _read_all(client, f"{base}/b") == b"small"


async def test_an_upstream_that_never_accepts_times_out_connecting() -> None:
    # A listener that never accepts, its backlog already full: the kernel drops further
    # SYNs, so a connect hangs as it does towards a black-holed address.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        async with h1_client(f"http://127.0.0.1:{port}", timeouts={"connect": 0.3}) as client:
            with pytest.raises(UpstreamTimeout, match=r"\(connect\)"):
                await _read_all(client, f"http://127.0.0.1:{port}/v1/chat/completions")
            assert pool_of(client) == (0, 0)
    finally:
        for sock in (listener, *fillers):
            sock.close()


async def test_an_answer_nobody_asked_for_is_never_read_as_the_next_one(
    scripted: StartScripted,
) -> None:
    # Request 1 gets its answer and, in the same write, a second one; request 2 must
    # get its own answer on a fresh connection, not the stray one.
    def script(n: int) -> bytes | None:
        return answer(b"one") + answer(b"stray") if n == 1 else answer(f"answer {n}".encode())

    base = await scripted(script)
    async with h1_client(base) as client:
        assert await _read_all(client, f"{base}/a") == b"one"
        assert pool_of(client) == (0, 0)  # not pooled: it talked out of turn
        assert await _read_all(client, f"{base}/a") == b"answer 2"  # a new connection
