"""Metrics, traces and request ids, read from a real gateway after known traffic."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sys
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from ai_service.config import parse_config
from ai_service.observability.logging import JsonFormatter, TextFormatter
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import (
    AIServiceError,
    AsyncAIClient,
    AuthenticationError,
    ChatCompletionRequest,
    Message,
    NotFoundError,
)
from ai_service_protos import ai_service_pb2_grpc
from tests.conftest import TEST_ENV, TEST_KEY, StartGateway, config_tree

METRICS_ON_ANY_PORT = {"metrics": {"listen": "127.0.0.1:0"}}


def ask(text: str = "hello", model: str = "sim-gpt") -> ChatCompletionRequest:
    return ChatCompletionRequest(model=model, messages=[Message(role="user", content=text)])


async def scrape(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    server = gateway.observability.metrics_server
    assert server is not None and server.port
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape_counted(
    gateway: Gateway, calls: int
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The metrics once `calls` calls are counted (for a minute at most): a call is
    recorded as its handler unwinds, which may be just after its caller had the status
    (gRPC sends an abort's status at once), or on a starved machine seconds later."""
    deadline = asyncio.get_running_loop().time() + 60
    while value(samples := await scrape(gateway), "ai_gateway_requests_total") < calls:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.02)
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def totals(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, *by: str
) -> dict[tuple[str, ...], float]:
    """The samples called `name` summed by the values of the labels `by`: samples that
    differ in another label (a call's model, say) add up under one key."""
    summed: dict[tuple[str, ...], float] = {}
    for (n, labels), count in samples.items():
        if n == name:
            key = tuple(dict(labels)[label] for label in by)
            summed[key] = summed.get(key, 0) + count
    return summed


async def test_metrics_count_known_traffic_exactly(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(observability=METRICS_ON_ANY_PORT)
    input_tokens = output_tokens = 0
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        for _ in range(3):
            response = await client.chat(ask())
            input_tokens += response.usage.prompt_tokens
            output_tokens += response.usage.completion_tokens
        for _ in range(2):
            chunks = [c async for c in client.stream_chat(ask("/tokens 5"))]
            input_tokens += chunks[-1].usage.prompt_tokens
            output_tokens += chunks[-1].usage.completion_tokens
        with pytest.raises(NotFoundError):
            await client.chat(ask(model="no-such-model"))
        # One upstream 503: the call succeeds on its second attempt.
        simulator.add_fault(FaultRule("status", status=503, times=1))
        response = await client.chat(ask())
        input_tokens += response.usage.prompt_tokens
        output_tokens += response.usage.completion_tokens
    async with AsyncAIClient(gateway.address, "wrong-key") as stranger:
        with pytest.raises(AuthenticationError):
            await stranger.chat(ask())

    m = await scrape_counted(gateway, 8)
    requests = "ai_gateway_requests_total"
    assert (
        value(m, requests, method="ChatCompletion", model="sim-gpt", key="tester", code="OK") == 4
    )
    assert value(m, requests, method="StreamChatCompletion", code="OK") == 2
    assert value(m, requests, method="ChatCompletion", model="", code="NOT_FOUND") == 1
    assert value(m, requests, key="", code="UNAUTHENTICATED") == 1
    assert value(m, requests) == 8
    duration = "ai_gateway_request_duration_seconds_count"
    assert value(m, duration, method="ChatCompletion", model="sim-gpt", code="OK") == 4
    assert value(m, "ai_gateway_overhead_duration_seconds_count") == 8
    assert value(m, "gen_ai_server_time_to_first_token_seconds_count", model="sim-gpt") == 2
    # Seven upstream attempts: six answered, one 503.
    upstream = "gen_ai_client_operation_duration_seconds_count"
    assert value(m, upstream, deployment="simulator/sim-gpt-1", error_type="") == 6
    assert value(m, upstream, error_type="UPSTREAM_UNAVAILABLE") == 1
    assert value(m, "ai_gateway_retries_total", model="sim-gpt") == 1
    assert value(m, "ai_gateway_fallbacks_total") == 0
    tokens = "gen_ai_client_token_usage"
    assert value(m, f"{tokens}_count", gen_ai_token_type="input") == 6
    assert value(m, f"{tokens}_sum", gen_ai_token_type="input") == input_tokens
    assert value(m, f"{tokens}_sum", gen_ai_token_type="output") == output_tokens
    assert value(m, "ai_gateway_calls_in_flight") == 0
    assert value(m, "ai_gateway_circuit_state", deployment="simulator/sim-gpt-1") == 0
    assert value(m, "ai_gateway_upstream_connections_in_use", provider="simulator") == 0
    assert value(m, "ai_gateway_upstream_connections_max", provider="simulator") == 1000
    # Bounded labels: the key's name, never the key.
    assert not any(TEST_KEY in str(labels) for _, labels in m)


async def test_rate_limit_rejections_and_fallbacks_are_counted(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(
        observability=METRICS_ON_ANY_PORT,
        rate_limit={"requests_per_minute": 2, "burst": 2},
        models=[
            {
                "name": "sim-gpt",
                "provider": "simulator",
                "upstream_model": "broken",
                "fallbacks": ["sim-other"],
            },
            {"name": "sim-other", "provider": "simulator", "upstream_model": "sim-other-1"},
        ],
    )
    simulator.add_fault(FaultRule("status", model="broken", status=500))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        await client.chat(ask())  # fails on `broken`, served by the fallback
        await client.chat(ask())
        with pytest.raises(AIServiceError) as refused:
            await client.chat(ask())
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    m = await scrape_counted(gateway, 3)
    assert value(m, "ai_gateway_rate_limited_total", key="tester") == 1
    assert value(m, "ai_gateway_requests_total", code="RESOURCE_EXHAUSTED", key="tester") == 1
    assert value(m, "ai_gateway_fallbacks_total", model="sim-gpt") == 2
    assert value(m, "ai_gateway_retries_total", model="sim-gpt") == 2


async def test_metrics_port_clash_is_logged_and_the_gateway_serves_on(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    first = await start_gateway(observability=METRICS_ON_ANY_PORT)
    assert first.observability.metrics_server is not None
    taken = f"127.0.0.1:{first.observability.metrics_server.port}"
    with caplog.at_level(logging.ERROR):
        second = await start_gateway(observability={"metrics": {"listen": taken}})
    assert "metrics NOT served" in caplog.text
    async with AsyncAIClient(second.address, TEST_KEY, timeout=10) as client:
        assert (await client.chat(ask())).choices


# --- traces -------------------------------------------------------------------------------

CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"


def attr(span: ReadableSpan, name: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(name)


@pytest.mark.parametrize("server_spans", ["gateway", "opentelemetry-grpc"])
async def test_spans_show_the_call_its_attempts_and_carry_the_callers_trace_upstream(
    simulator: Simulator, server_spans: str
) -> None:
    exporter = InMemorySpanExporter()
    tree = config_tree(
        simulator.base_url,
        observability__tracing__server_spans=server_spans,
        resilience={"retries": {"backoff_base_ms": 1}},
    )
    config = parse_config(tree, env=TEST_ENV)
    simulator.add_fault(FaultRule("status", status=500, times=1))
    simulator.add_fault(FaultRule("status", status=503, times=1))
    traceparent = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"
    async with (
        Gateway(config, span_exporter=exporter) as gateway,
        AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client,
    ):
        metadata = [("traceparent", traceparent), ("x-request-id", "traced")]
        response = await client.chat(ask(), metadata=metadata)
        # Health is never traced (its Watch breaks under the instrumentation).
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())

    spans = exporter.get_finished_spans()
    assert not [s for s in spans if "Health" in s.name]
    [server] = [s for s in spans if s.kind is SpanKind.SERVER]
    # The RPC conventions' name in both modes (the instrumentation's own has a leading /).
    assert server.name == "ai_service.v1.AIService/ChatCompletion"
    assert attr(server, "rpc.system") == "grpc"
    assert attr(server, "rpc.grpc.status_code") == 0
    assert f"{server.context.trace_id:032x}" == CALLER_TRACE_ID
    assert server.parent is not None and f"{server.parent.span_id:016x}" == CALLER_SPAN_ID
    assert attr(server, "gen_ai.request.model") == "sim-gpt"
    assert attr(server, "gen_ai.usage.output_tokens") == response.usage.completion_tokens

    attempts = sorted(
        (s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: attr(s, "ai_service.attempt")
    )
    assert [s.name for s in attempts] == ["chat sim-gpt-1"] * 3
    for span in attempts:
        assert span.parent is not None and span.parent.span_id == server.context.span_id
        assert attr(span, "gen_ai.provider.name") == "openai"
        assert attr(span, "gen_ai.system") == "openai"  # deprecated, kept for a release
        assert attr(span, "gen_ai.operation.name") == "chat"
        assert attr(span, "gen_ai.request.model") == "sim-gpt-1"
        assert attr(span, "server.address") == "127.0.0.1"
        assert attr(span, "server.port") == simulator.port
    *failed, served = attempts
    # One reason for both, told apart by the upstream's status.
    assert [attr(span, "error.type") for span in failed] == ["500", "503"]
    assert [attr(span, "http.response.status_code") for span in failed] == [500, 503]
    for span in failed:
        assert attr(span, "ai_service.reason") == "UPSTREAM_UNAVAILABLE"
        assert span.status.status_code is StatusCode.ERROR
    assert attr(served, "http.response.status_code") == 200
    assert attr(served, "error.type") is None
    assert attr(served, "gen_ai.response.model") == response.model
    assert attr(served, "gen_ai.usage.input_tokens") == response.usage.prompt_tokens
    assert attr(served, "gen_ai.usage.output_tokens") == response.usage.completion_tokens

    # Onward: each upstream request carried its own attempt's span in the caller's trace.
    received = [r.headers.get("traceparent") for r in simulator.stats.received]
    assert received == [f"00-{CALLER_TRACE_ID}-{span.context.span_id:016x}-01" for span in attempts]
    assert [r.headers.get("x-request-id") for r in simulator.stats.received] == ["traced"] * 3
    for span in spans:  # no secret in any attribute
        assert TEST_KEY not in str(span.attributes)


async def test_an_unsampled_trace_exports_nothing_but_still_travels_upstream(
    simulator: Simulator,
) -> None:
    exporter = InMemorySpanExporter()
    tree = config_tree(simulator.base_url, observability__tracing__sample_ratio=0.0)
    config = parse_config(tree, env=TEST_ENV)
    async with (
        Gateway(config, span_exporter=exporter) as gateway,
        AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client,
    ):
        unsampled = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-00"
        await client.chat(ask(), metadata=[("traceparent", unsampled)])
        await client.chat(ask())  # a new trace, not sampled at 0%
    assert exporter.get_finished_spans() == ()
    caller, fresh = [r.headers.get("traceparent") for r in simulator.stats.received]
    assert caller is not None and caller.startswith(f"00-{CALLER_TRACE_ID}-")
    assert caller.endswith("-00") and CALLER_SPAN_ID not in caller
    assert fresh is not None and CALLER_TRACE_ID not in fresh
    assert int(fresh[-2:], 16) & 1 == 0  # the sampled flag is off


@pytest.mark.parametrize("server_spans", ["gateway", "opentelemetry-grpc"])
async def test_a_server_span_is_an_error_only_when_the_server_failed(
    simulator: Simulator, server_spans: str
) -> None:
    # The RPC conventions: a caller's mistake (no key, an unknown model, a bad request)
    # leaves the server span's status unset; an UNAVAILABLE or a deadline marks it
    # ERROR. Both modes behave alike, the caller's own cancel included.
    exporter = InMemorySpanExporter()
    tree = config_tree(
        simulator.base_url,
        observability__tracing__server_spans=server_spans,
        resilience={"retries": {"max_attempts": 1}},
    )
    simulator.add_fault(FaultRule("status", model="sim-other-1", status=503))
    async with (
        Gateway(parse_config(tree, env=TEST_ENV), span_exporter=exporter) as gateway,
        AsyncAIClient(gateway.address, TEST_KEY, timeout=10, service_config="") as client,
        AsyncAIClient(gateway.address, "not-a-key-0123456789", service_config="") as stranger,
    ):
        with pytest.raises(AuthenticationError):
            await stranger.chat(ask())
        with pytest.raises(NotFoundError):
            await client.chat(ask(model="no-such-model"))
        with pytest.raises(AIServiceError) as bad:
            await client.chat(ChatCompletionRequest(model="sim-gpt", messages=[]))
        assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(AIServiceError) as down:
            await client.chat(ask(model="sim-other"))
        assert down.value.code is grpc.StatusCode.UNAVAILABLE
        simulator.add_fault(FaultRule("latency", model="sim-gpt-1", seconds=2, times=1))
        with pytest.raises(AIServiceError) as late:
            await client.chat(ask(), timeout=0.3)
        assert late.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
        await client.chat(ask())
    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    codes = {code.value[0]: code for code in grpc.StatusCode}
    seen = {codes[attr(span, "rpc.grpc.status_code")]: span for span in servers}
    expected = {
        grpc.StatusCode.UNAUTHENTICATED: (StatusCode.UNSET, "UNAUTHENTICATED"),
        grpc.StatusCode.NOT_FOUND: (StatusCode.UNSET, "MODEL_NOT_FOUND"),
        grpc.StatusCode.INVALID_ARGUMENT: (StatusCode.UNSET, "INVALID_REQUEST"),
        grpc.StatusCode.UNAVAILABLE: (StatusCode.ERROR, "UPSTREAM_UNAVAILABLE"),
        grpc.StatusCode.DEADLINE_EXCEEDED: (StatusCode.ERROR, "DEADLINE_EXCEEDED"),
        grpc.StatusCode.OK: (StatusCode.UNSET, None),
    }
    assert set(seen) == set(expected), [s.name for s in servers]
    for code, (status, error_type) in expected.items():
        span = seen[code]
        assert span.name == "ai_service.v1.AIService/ChatCompletion", code
        assert attr(span, "rpc.method") == "ChatCompletion"
        assert span.status.status_code is status, code
        assert attr(span, "error.type") == error_type, code


async def test_tracing_off_installs_no_instrumentation(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    assert gateway.observability.tracing is None
    names = [type(i).__name__ for i in gateway.observability.interceptors(gateway.arrivals)]
    assert names == ["TelemetryInterceptor"]


# --- request ids and logs -------------------------------------------------------------------


async def test_request_id_is_taken_or_made_returned_and_logged(
    gateway: Gateway, simulator: Simulator
) -> None:
    # The production handler: JSON lines formatted as they are logged.
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    text = io.StringIO()  # and `--log-format text`'s
    text_handler = logging.StreamHandler(text)
    text_handler.setFormatter(TextFormatter())
    dispatch_log = logging.getLogger("ai_service.pipeline.dispatch")
    dispatch_log.addHandler(handler)
    dispatch_log.addHandler(text_handler)
    level = dispatch_log.level
    dispatch_log.setLevel(logging.INFO)
    simulator.add_fault(FaultRule("status", status=503, times=1))  # makes the gateway log
    try:
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = ai_service_pb2_grpc.AIServiceStub(channel)
            auth = ("authorization", f"Bearer {TEST_KEY}")
            call = stub.ChatCompletion(ask(), metadata=(auth, ("x-request-id", "req-42")))
            await call
            # Unary: with the status (trailing metadata), at no extra send.
            assert ("x-request-id", "req-42") in list(await call.trailing_metadata())
            made = stub.ChatCompletion(ask(), metadata=(auth, ("x-request-id", "not a token")))
            await made
            returned = dict(list(await made.trailing_metadata()))["x-request-id"]
            assert returned != "not a token" and len(returned) == 24
            # A stream: in the initial metadata, known before the first chunk.
            stream = stub.StreamChatCompletion(ask(), metadata=(auth, ("x-request-id", "req-43")))
            assert ("x-request-id", "req-43") in list(await stream.initial_metadata())
            [chunk async for chunk in stream]
            # A refusal carries it too.
            refused = stub.ChatCompletion(ask(), metadata=(("x-request-id", "req-44"),))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await refused
            assert ("x-request-id", "req-44") in list(caught.value.trailing_metadata())
    finally:
        dispatch_log.removeHandler(handler)
        dispatch_log.removeHandler(text_handler)
        dispatch_log.setLevel(level)
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [entry["message"] for entry in logged] == ["attempt failed"]
    assert logged[0]["request_id"] == "req-42"
    (line,) = text.getvalue().splitlines()
    assert "ai_service.pipeline.dispatch: attempt failed request_id=req-42 " in line
    assert "reason=UPSTREAM_UNAVAILABLE" in line


async def test_a_stream_refused_at_once_still_gets_its_request_id_and_its_status(
    gateway: Gateway, simulator: Simulator
) -> None:
    # The request id's initial metadata is sent while the call goes on; a refusal that
    # comes before that send has finished must wait for it (gRPC takes one per call).
    auth = ("authorization", f"Bearer {TEST_KEY}")
    refusals = {
        "bad input": (ask(model="no-such-model"), (auth,), grpc.StatusCode.NOT_FOUND),
        "no key": (ask(), (), grpc.StatusCode.UNAUTHENTICATED),
    }
    upstream_calls = simulator.stats.total_requests
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        for name, (request, metadata, code) in refusals.items():
            streams = [
                stub.StreamChatCompletion(request, metadata=(*metadata, ("x-request-id", f"r{i}")))
                for i in range(20)
            ]
            for i, stream in enumerate(streams):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    [chunk async for chunk in stream]
                assert caught.value.code() is code, name
                assert ("x-request-id", f"r{i}") in list(await stream.initial_metadata()), name
    assert simulator.stats.total_requests == upstream_calls


async def test_a_stream_cancelled_or_timed_out_mid_send_is_counted_as_such(
    start_gateway: StartGateway,
) -> None:
    # From a zero-latency upstream the stream's task spends its time in grpc.aio's send,
    # so that is where most cancels land: grpc then closes the stream at its `yield`.
    gateway = await start_gateway(observability=METRICS_ON_ANY_PORT)
    auth = ("authorization", f"Bearer {TEST_KEY}")
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        for _ in range(20):
            stream = stub.StreamChatCompletion(ask("/tokens 5000"), metadata=(auth,))
            await stream.read()
            stream.cancel()
        for _ in range(5):
            stream = stub.StreamChatCompletion(
                ask("/tokens 1000000"), metadata=(auth,), timeout=0.2
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                [chunk async for chunk in stream]
            assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        samples = await scrape_counted(gateway, 25)  # whoever ended each
    # A deadline that passes before the call is routed is counted without a model.
    ended = {code: n for (code,), n in totals(samples, "ai_gateway_requests_total", "code").items()}
    # A stream may finish before its cancel arrives, and the caller's deadline may
    # reach the gateway as a cancel just before its own: none is lost or UNKNOWN.
    assert set(ended) <= {"CANCELLED", "OK", "DEADLINE_EXCEEDED"}, ended
    assert sum(ended.values()) == 25 and ended["CANCELLED"] > 0, ended


@contextlib.contextmanager
def async_generators_kept() -> Iterator[None]:
    """Every async generator first iterated in the block, held: none is finalized by
    the garbage collector while the test runs, as happens when something references it."""
    kept: list[AsyncGenerator[Any, None]] = []
    firstiter, finalizer = sys.get_asyncgen_hooks()

    def keep(generator: AsyncGenerator[Any, None]) -> None:
        kept.append(generator)
        if firstiter is not None:
            firstiter(generator)

    sys.set_asyncgen_hooks(firstiter=keep, finalizer=finalizer)
    try:
        yield
    finally:
        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)


async def test_a_stream_cut_while_a_chunk_waits_to_be_sent_ends_with_its_call(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    """A caller that stops reading fills the stream's flow-control window, so the gateway
    waits in its send of a chunk when the cancel or the deadline comes. The stream ends
    there and then, not when the garbage collector gets to its generators (held alive
    here, as a stray reference would): counted, and its upstream stream closed."""
    gateway = await start_gateway(observability=METRICS_ON_ANY_PORT)
    auth = ("authorization", f"Bearer {TEST_KEY}")
    # Without BDP probing the caller's window stays at HTTP/2's 64 KiB: a stream of
    # 100,000 words cannot finish unread, however fast the machine.
    small_window = [("grpc.http2.bdp_probe", 0)]
    with async_generators_kept():
        async with grpc.aio.insecure_channel(gateway.address, options=small_window) as channel:
            stub = ai_service_pb2_grpc.AIServiceStub(channel)
            for _ in range(3):
                stream = stub.StreamChatCompletion(ask("/tokens 100000"), metadata=(auth,))
                await stream.read()
                await asyncio.sleep(0.3)  # the window fills; the gateway waits to send
                stream.cancel()
            for _ in range(3):
                # Time for the first chunk on a loaded machine; then none is read.
                stream = stub.StreamChatCompletion(
                    ask("/tokens 100000"), metadata=(auth,), timeout=1.0
                )
                await stream.read()
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await asyncio.sleep(1.1)
                    await stream.read()
                assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            samples = await scrape_counted(gateway, 6)
            for _ in range(500):
                if not simulator.stats.streams_in_flight:
                    break
                await asyncio.sleep(0.02)
    cancelled = value(samples, "ai_gateway_requests_total", code="CANCELLED")
    timed_out = value(samples, "ai_gateway_requests_total", code="DEADLINE_EXCEEDED")
    # A deadline's cancel that arrives well before the gateway's copy of the deadline
    # (a loaded machine delaying the call's headers) is counted CANCELLED.
    assert cancelled + timed_out == 6, samples
    assert cancelled >= 3, samples
    assert simulator.stats.streams_in_flight == 0


async def test_a_stream_answered_at_once_waits_for_its_request_id_and_a_cancelled_one_ends(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(cache={"enabled": True}, observability=METRICS_ON_ANY_PORT)
    request = ask()
    request.temperature = 0  # cacheable
    auth = ("authorization", f"Bearer {TEST_KEY}")
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        [chunk async for chunk in stub.StreamChatCompletion(request, metadata=(auth,))]
        # From the cache the first chunk is ready before the request id's send is done.
        for i in range(10):
            stream = stub.StreamChatCompletion(request, metadata=(auth, ("x-request-id", f"c{i}")))
            chunks = [chunk async for chunk in stream]
            assert chunks[0].cached and await stream.code() is grpc.StatusCode.OK
            assert ("x-request-id", f"c{i}") in list(await stream.initial_metadata())
        # Cancelled while the send may still be on its way: every call still ends.
        simulator.config.latency_ms = 200
        for _ in range(10):
            stub.StreamChatCompletion(ask(), metadata=(auth,)).cancel()
        for _ in range(100):
            if value(await scrape(gateway), "ai_gateway_calls_in_flight") == 0:
                break
            await asyncio.sleep(0.05)
    assert value(await scrape(gateway), "ai_gateway_calls_in_flight") == 0


@pytest.mark.parametrize("method", ["ChatCompletion", "StreamChatCompletion"])
async def test_bytes_that_are_no_request_get_invalid_argument_with_a_request_id(
    start_gateway: StartGateway, simulator: Simulator, method: str
) -> None:
    gateway = await start_gateway(observability=METRICS_ON_ANY_PORT)
    path = f"/ai_service.v1.AIService/{method}"
    metadata = (("authorization", f"Bearer {TEST_KEY}"), ("x-request-id", "garbled"))
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        if method == "ChatCompletion":
            call: Any = channel.unary_unary(path)(b"\xff\xff\xff", metadata=metadata)
        else:
            call = channel.unary_stream(path)(b"\xff\xff\xff", metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await (call if method == "ChatCompletion" else call.read())
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("request: cannot be decoded")
    assert ("x-request-id", "garbled") in list(caught.value.trailing_metadata())
    samples = await scrape_counted(gateway, 1)
    assert value(samples, "ai_gateway_requests_total", code="INVALID_ARGUMENT") == 1
    assert simulator.stats.total_requests == 0


async def test_an_answer_larger_than_the_gateway_may_send_is_refused_and_recorded_so(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(
        server={"listen": "127.0.0.1:0", "max_send_message_bytes": 600},
        observability={"metrics": {"listen": "127.0.0.1:0"}},
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        assert (await client.chat(ask("hello"))).choices[0].message.content == "You said: hello"
        with pytest.raises(AIServiceError) as refused:
            await client.chat(ask("/tokens 400"))
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.reason == "ANSWER_TOO_LARGE"
    assert "server.max_send_message_bytes, 600" in refused.value.message
    samples = await scrape_counted(gateway, 2)
    ended = totals(samples, "ai_gateway_requests_total", "code", "reason")
    assert ended == {("OK", ""): 1, ("RESOURCE_EXHAUSTED", "ANSWER_TOO_LARGE"): 1}
