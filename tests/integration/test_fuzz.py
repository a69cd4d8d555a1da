"""Hostile input, both ways: random and adversarial requests from callers, and broken
bodies from upstreams. Every call must end with OK or a well-formed, non-INTERNAL
status (a broken upstream: UNAVAILABLE/INTERNAL/DEADLINE_EXCEEDED, never a hang),
the gateway must stay up, and its memory must stay bounded.

The gateway runs in a background thread with its own event loop, so these tests
can drive it with Hypothesis through the synchronous gRPC client.
"""

from __future__ import annotations

import asyncio
import json
import resource
import threading
from collections.abc import Awaitable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_service.config import parse_config
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import Simulator, SimulatorConfig
from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest
from tests.conftest import TEST_ENV, TEST_KEY, config_tree

T = TypeVar("T")

ALLOWED_FOR_CALLERS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}


class LoopThread:
    """An event loop in a background thread, for servers a sync test talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Awaitable[T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)  # type: ignore[arg-type]
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@dataclass
class Served:
    address: str
    loop: LoopThread
    gateway: Gateway


def start_gateway_in(loop: LoopThread, upstream_url: str, **overrides: Any) -> Gateway:
    config = parse_config(config_tree(upstream_url, **overrides), env=TEST_ENV)

    async def start() -> Gateway:
        gateway = Gateway(config)
        await gateway.start()
        return gateway

    return loop.run(start())


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- callers sending anything ---------------------------------------------------------------

_text = st.text(max_size=60)
_role = st.one_of(st.sampled_from(["system", "user", "assistant", "tool"]), _text)
_json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | _text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=30,
)


def _deep_schema(depth: int) -> str:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return json.dumps(schema)  # the stdlib nests deeper than orjson will


_parameters = st.one_of(
    _json_value.map(lambda v: orjson.dumps(v).decode()),
    _text,
    st.integers(0, 300).map(_deep_schema),
)
_message = st.fixed_dictionaries(
    {"role": _role, "content": st.one_of(_text, st.integers(2**17, 2**19).map(lambda n: "x" * n))},
    optional={
        "name": _text,
        "tool_call_id": _text,
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {
                    "id": _text,
                    "function": st.fixed_dictionaries({"name": _text, "arguments": _text}),
                }
            ),
            max_size=2,
        ),
    },
)
_number = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**6).map(float)
_request = st.fixed_dictionaries(
    {
        "model": st.one_of(st.just("sim-gpt"), _text),
        "messages": st.lists(_message, max_size=4),
    },
    optional={
        "temperature": _number,
        "top_p": _number,
        "presence_penalty": _number,
        "max_tokens": st.integers(-(2**31), 2**31 - 1),
        "seed": st.integers(-(2**63), 2**63 - 1),
        "stop": st.lists(_text, max_size=6),
        "user": _text,
        "metadata": st.dictionaries(_text, _text, max_size=80),
        "tools": st.lists(
            st.fixed_dictionaries(
                {"function": st.fixed_dictionaries({"name": _text, "parameters_json": _parameters})}
            ),
            max_size=3,
        ),
        "tool_choice": st.one_of(
            st.fixed_dictionaries({"mode": _text}), st.fixed_dictionaries({"function": _text})
        ),
    },
)


def to_request(fields: dict[str, Any]) -> ChatCompletionRequest:
    request = ChatCompletionRequest(model=fields["model"])
    for message in fields["messages"]:
        out = request.messages.add(role=message["role"], content=message["content"])
        out.name = message.get("name", "")
        out.tool_call_id = message.get("tool_call_id", "")
        for call in message.get("tool_calls", ()):
            added = out.tool_calls.add(id=call["id"])
            added.function.name = call["function"]["name"]
            added.function.arguments = call["function"]["arguments"]
    for name in ("temperature", "top_p", "presence_penalty", "max_tokens", "seed", "user"):
        if name in fields:
            setattr(request, name, fields[name])
    request.stop.extend(fields.get("stop", ()))
    request.metadata.update(fields.get("metadata", {}))
    for tool in fields.get("tools", ()):
        added_tool = request.tools.add()
        added_tool.function.name = tool["function"]["name"]
        added_tool.function.parameters_json = tool["function"]["parameters_json"]
    if "tool_choice" in fields:
        for key, value in fields["tool_choice"].items():
            setattr(request.tool_choice, key, value)
    return request


_metadata_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
)
_metadata = st.lists(
    st.one_of(
        st.tuples(st.just("x-fuzz-bin"), st.binary(max_size=64)),  # any bytes, invalid UTF-8 too
        st.tuples(st.sampled_from(["x-request-id", "x-tag", "user-agent-x"]), _metadata_value),
    ),
    max_size=4,
)


@pytest.fixture(scope="module")
def fuzz_target() -> Iterator[Served]:
    loop = LoopThread()
    simulator = Simulator(SimulatorConfig(api_key="sk-provider-secret-do-not-leak"))
    loop.run(simulator.start())
    gateway = start_gateway_in(loop, simulator.base_url)
    try:
        yield Served(gateway.address, loop, gateway)
    finally:
        loop.run(gateway.stop(0))
        loop.run(simulator.stop())
        loop.close()


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(fields=_request, metadata=_metadata, streamed=st.booleans())
def test_random_requests_end_ok_or_with_a_well_formed_refusal(
    fuzz_target: Served, fields: dict[str, Any], metadata: list[tuple[str, Any]], streamed: bool
) -> None:
    request = to_request(fields)
    with grpc.insecure_channel(fuzz_target.address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        call_metadata = [("authorization", f"Bearer {TEST_KEY}"), *metadata]
        try:
            if streamed:
                for _ in stub.StreamChatCompletion(request, metadata=call_metadata, timeout=15):
                    pass
            else:
                stub.ChatCompletion(request, metadata=call_metadata, timeout=15)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            assert error.details(), "a refusal must say why"
    assert code in ALLOWED_FOR_CALLERS, (code, fields)


def test_the_gateway_is_up_and_its_memory_bounded_after_the_fuzzing(fuzz_target: Served) -> None:
    # Runs after the fuzz test in this module: the same gateway still answers.
    before = rss_mib()
    with grpc.insecure_channel(fuzz_target.address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        request = to_request({"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}]})
        for _ in range(200):
            answer = stub.ChatCompletion(
                request, metadata=[("authorization", f"Bearer {TEST_KEY}")], timeout=10
            )
            assert answer.choices[0].message.content == "You said: hi"
    assert rss_mib() - before < 64


# --- upstreams sending anything -------------------------------------------------------------


@dataclass
class BrokenUpstream:
    """A real HTTP server whose next answers are whatever the test sets."""

    status: int = 200
    content_type: str = "application/json"
    pieces: list[bytes] = field(default_factory=list)
    endless: bool = False
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(
            status=self.status, headers={"content-type": self.content_type}
        )
        await response.prepare(request)
        for piece in self.pieces:
            await response.write(piece)
        while self.endless:  # an upstream that never finishes; the client's deadline ends it
            await response.write(b': still here\n\ndata: {"choices": []}\n\n')
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response


_sse_event = st.one_of(
    st.builds(lambda v: b"data: " + orjson.dumps(v) + b"\n\n", _json_value),
    st.binary(max_size=80),
    st.just(b"data: [DONE]\n\n"),
    st.just(b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'),
    st.just(b'data: {"choices": [{"delta": {"content": 7}, "index": "x"}]}\n\n'),
    st.just(b"data: {truncated"),
)
_body = st.one_of(
    st.lists(_sse_event, max_size=6),
    st.builds(lambda v: [orjson.dumps(v)], _json_value),
    st.builds(lambda b: [b], st.binary(max_size=200)),
    st.just([b'{"id": "x", "choices": [{"message": {"content": "ok"}}]']),  # truncated JSON
)


@pytest.fixture(scope="module")
def broken_upstream() -> Iterator[tuple[Served, BrokenUpstream]]:
    loop = LoopThread()
    upstream = BrokenUpstream()
    loop.run(upstream.start())
    gateway = start_gateway_in(
        loop,
        f"http://127.0.0.1:{upstream.port}",
        # Every broken body must reach the adapter: no retry, no circuit opening.
        resilience={
            "retries": {"max_attempts": 1},
            "circuit_breaker": {"consecutive_failures": 10**6, "min_calls": 10**6},
        },
    )
    try:
        yield Served(gateway.address, loop, gateway), upstream
    finally:
        loop.run(gateway.stop(0))
        loop.run(upstream.stop())
        loop.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=st.sampled_from([200, 200, 200, 201, 204, 400, 500, 502, 418]),
    content_type=st.sampled_from(
        ["application/json", "text/event-stream", "text/html", "application/octet-stream", ""]
    ),
    pieces=_body,
    streamed=st.booleans(),
)
def test_broken_upstream_bodies_end_cleanly_and_never_hang(
    broken_upstream: tuple[Served, BrokenUpstream],
    status: int,
    content_type: str,
    pieces: list[bytes],
    streamed: bool,
) -> None:
    served, upstream = broken_upstream
    upstream.status, upstream.content_type, upstream.pieces = status, content_type, pieces
    code = _call(served.address, streamed, timeout=5)
    assert code in {
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.INVALID_ARGUMENT,  # a 400 or 418 from the upstream
        grpc.StatusCode.INTERNAL,
    }, (code, status, pieces)


def test_an_endless_upstream_stream_ends_at_the_deadline(
    broken_upstream: tuple[Served, BrokenUpstream],
) -> None:
    served, upstream = broken_upstream
    upstream.status, upstream.content_type, upstream.pieces = 200, "text/event-stream", []
    upstream.endless = True
    try:
        for streamed in (False, True):
            assert _call(served.address, streamed, timeout=1.0) is grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        upstream.endless = False


def _call(address: str, streamed: bool, timeout: float) -> grpc.StatusCode:
    request = to_request({"model": "sim-gpt", "messages": [{"role": "user", "content": "hi"}]})
    metadata = [("authorization", f"Bearer {TEST_KEY}")]
    with grpc.insecure_channel(address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        try:
            if streamed:
                for _ in stub.StreamChatCompletion(request, metadata=metadata, timeout=timeout):
                    pass
            else:
                stub.ChatCompletion(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK
