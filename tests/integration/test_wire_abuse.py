"""What a client that breaks the HTTP/2 and gRPC rules can hold on a real gateway.

A raw HTTP/2 client (tests/h2wire.py) sends what no gRPC client sends: HEADERS with no
request after them, more streams than the server allows, connections past its limit,
streams reset as fast as they open. Each must be refused or ended, never held.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ai_service.runtime.gateway import Gateway
from ai_service_client import AsyncAIClient, CallCancelledError
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, Message
from bench.h2raw import RawH2
from tests.conftest import TEST_KEY, StartGateway, until

CHAT = "/ai_service.v1.AIService/ChatCompletion"
STREAM = "/ai_service.v1.AIService/StreamChatCompletion"
CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
KEY = [("authorization", f"Bearer {TEST_KEY}")]
REFUSED_STREAM = 7  # HTTP/2 error codes
ENHANCE_YOUR_CALM = 11
UNAUTHENTICATED = str(grpc.StatusCode.UNAUTHENTICATED.value[0])
DEADLINE_EXCEEDED = str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
#: So long that a call ended within a test was not ended by the bound on its request.
NEVER = 600


@pytest.fixture
async def raw_connections() -> AsyncIterator[list[RawH2]]:
    opened: list[RawH2] = []
    yield opened
    for raw in opened:
        await raw.close()


async def connect(gateway: Gateway, opened: list[RawH2]) -> RawH2:
    raw = await RawH2.connect("127.0.0.1", gateway.port)
    opened.append(raw)
    return raw


async def test_a_call_without_a_key_is_refused_from_its_headers(
    start_gateway: StartGateway, raw_connections: list[RawH2]
) -> None:
    gateway = await start_gateway(server__request_message_timeout_seconds=NEVER)
    raw = await connect(gateway, raw_connections)
    for method in (CHAT, STREAM):
        for metadata in ([], [("authorization", "Bearer not-a-key")]):
            stream = await raw.open(method, metadata)  # HEADERS, and never a request
            ended = await raw.wait_ended(stream)
            assert ended.grpc_status == UNAUTHENTICATED, (method, metadata)
    telemetry = gateway.observability._telemetry
    assert telemetry is not None
    await until(lambda: telemetry.calls == 0, "calls ended", seconds=30)


async def test_a_call_whose_request_never_comes_is_ended(
    start_gateway: StartGateway, raw_connections: list[RawH2]
) -> None:
    gateway = await start_gateway(server__request_message_timeout_seconds=0.5)
    raw = await connect(gateway, raw_connections)
    waiting = {
        "ChatCompletion": await raw.open(CHAT, KEY),
        "StreamChatCompletion": await raw.open(STREAM, KEY),
        "Health/Check": await raw.open(CHECK),
        "Health/Watch": await raw.open(WATCH),
        "reflection": await raw.open(REFLECTION),
    }
    for name, stream in waiting.items():
        ended = await raw.wait_ended(stream)
        assert ended.grpc_status == DEADLINE_EXCEEDED, name
        assert "no request message arrived within 0.5s" in ended.grpc_message, name
    # The connection itself is fine: a whole call on it is answered.
    request = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hi")])
    served = await raw.wait_ended(await raw.open(CHAT, KEY, message=request.SerializeToString()))
    assert served.grpc_status == "0"


async def test_past_the_calls_awaiting_their_request_the_longest_waiting_is_ended(
    start_gateway: StartGateway, raw_connections: list[RawH2]
) -> None:
    gateway = await start_gateway(
        server__max_calls_awaiting_request=3, server__request_message_timeout_seconds=NEVER
    )
    first, second = await connect(gateway, raw_connections), await connect(gateway, raw_connections)
    waiting = []
    for raw, method, metadata in ((first, CHECK, []), (second, CHAT, KEY), (first, WATCH, [])):
        waiting.append(await raw.open(method, metadata))  # one at a time: their order is known
        await until(
            lambda: gateway.arrivals.waiting == len(waiting), "the call waiting", seconds=30
        )
    newest = await second.open(CHECK)
    ended = await first.wait_ended(waiting[0])  # the longest waiting, on any connection
    assert ended.grpc_status == DEADLINE_EXCEEDED
    assert "no request message arrived while 3 calls waited" in ended.grpc_message
    await until(lambda: gateway.arrivals.waiting == 3, "three calls waiting again", seconds=30)
    assert first.open_streams() == waiting[2:] and second.open_streams() == [waiting[1], newest]
    # A whole call takes its turn, and is answered.
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        assert await client.ask("room for me", model="sim-gpt") == "You said: room for me"


async def test_streams_past_the_connection_limit_are_refused(
    start_gateway: StartGateway, raw_connections: list[RawH2]
) -> None:
    gateway = await start_gateway(
        server__max_concurrent_streams=4, server__request_message_timeout_seconds=NEVER
    )
    raw = await connect(gateway, raw_connections)
    assert raw.server_max_concurrent_streams == 4
    raw.ignore_stream_limit()  # as a hostile client would
    streams = [await raw.open(CHECK) for _ in range(10)]
    for stream in streams[4:]:
        assert (await raw.wait_ended(stream)).reset == REFUSED_STREAM
    assert raw.open_streams() == streams[:4]  # held, waiting for their requests


async def test_a_client_that_never_acknowledges_the_limit_is_refused_and_closed(
    start_gateway: StartGateway, raw_connections: list[RawH2]
) -> None:
    gateway = await start_gateway(
        server__max_concurrent_streams=4,
        server__request_message_timeout_seconds=NEVER,
        server__handshake_timeout_seconds=0.5,
    )
    raw = await RawH2.connect("127.0.0.1", gateway.port, acknowledge_settings=False)
    raw_connections.append(raw)
    raw.ignore_stream_limit()
    streams = [await raw.open(CHECK) for _ in range(10)]
    for stream in streams[4:]:
        assert (await raw.wait_ended(stream)).reset in (REFUSED_STREAM, ENHANCE_YOUR_CALM)
    await asyncio.wait_for(raw.closed.wait(), 30)  # the SETTINGS were never acknowledged


async def test_a_grpc_client_bursting_past_the_limit_has_every_call_answered(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(server__max_concurrent_streams=4)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=30) as client:
        for _ in range(2):  # on a new connection, then on one that knows the limit
            answers = await asyncio.gather(
                *(client.ask(f"burst {i}", model="sim-gpt") for i in range(40))
            )
            assert answers == [f"You said: burst {i}" for i in range(40)]


async def test_connections_past_the_limit_are_closed_at_once(
    start_gateway: StartGateway, raw_connections: list[RawH2]
) -> None:
    gateway = await start_gateway(server__max_connections=2, server__max_connection_idle_seconds=0)
    first = await connect(gateway, raw_connections)
    await connect(gateway, raw_connections)
    third = await connect(gateway, raw_connections)
    await asyncio.wait_for(third.closed.wait(), 30)
    assert not third.settings_received.is_set()
    # A connection that leaves frees its place.
    await first.close()
    fresh = None
    async with asyncio.timeout(30):
        while fresh is None or not fresh.settings_received.is_set():
            fresh = await connect(gateway, raw_connections)
            await asyncio.sleep(0.05)
    assert not fresh.closed.is_set()


async def test_an_idle_connection_is_closed(
    start_gateway: StartGateway, raw_connections: list[RawH2]
) -> None:
    gateway = await start_gateway(server__max_connection_idle_seconds=0.3)
    raw = await connect(gateway, raw_connections)
    await asyncio.wait_for(raw.closed.wait(), 30)
    assert raw.goaway is not None


async def test_rapid_reset_leaves_the_gateway_serving_and_holding_nothing(
    gateway: Gateway, raw_connections: list[RawH2]
) -> None:
    raw = await connect(gateway, raw_connections)
    for _ in range(2000):
        if raw.closed.is_set():  # gRPC may end such a connection: that is fine too
            break
        await raw.reset(await raw.open(CHAT, KEY))
    telemetry = gateway.observability._telemetry
    assert telemetry is not None
    await until(lambda: telemetry.calls == 0, "calls ended", seconds=30)
    # gRPC may still hold the reset calls in its backlog (`max_pending_calls`) for a
    # moment, shedding new ones CANCELLED meanwhile: the gateway serves once it is gone.
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        for _ in range(300):
            try:
                answer = await client.ask("still here", model="sim-gpt")
                break
            except CallCancelledError:
                await asyncio.sleep(0.1)
        assert answer == "You said: still here"


async def test_health_watch_streams_are_capped(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(server__max_health_watches=2)
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        watches = [health.Watch(request) for _ in range(2)]
        for watch in watches:
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        refused = health.Watch(request)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await refused.read()
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 health Watch streams are open" in (caught.value.details() or "")
        # Check still answers, and a Watch that ends frees its place.
        assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.SERVING
        watches[0].cancel()
        await until(lambda: gateway.health.watching < 2, "a watch ended", seconds=30)
        again = health.Watch(request)
        assert (await again.read()).status == health_pb2.HealthCheckResponse.SERVING
        again.cancel()
        watches[1].cancel()


@pytest.mark.parametrize(
    "method,streaming",
    [(CHECK, False), (WATCH, True), (REFLECTION, True), (CHAT, False)],
    ids=["health-check", "health-watch", "reflection", "chat"],
)
async def test_bytes_that_are_no_request_get_a_clear_invalid_argument(
    gateway: Gateway, method: str, streaming: bool
) -> None:
    garbage = b"\xff\xff\xff\xff"
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if method == REFLECTION:
                call = channel.stream_stream(method)(iter([garbage]), metadata=KEY, timeout=10)
                await call.read()
            elif streaming:
                await channel.unary_stream(method)(garbage, metadata=KEY, timeout=10).read()
            else:
                await channel.unary_unary(method)(garbage, metadata=KEY, timeout=10)
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert details.startswith("request: cannot be decoded"), details
    assert "class" not in details and "DecodeError" not in details, details
