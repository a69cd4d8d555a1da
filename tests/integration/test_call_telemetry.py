"""What one call leaves behind for an operator, whatever ended it: its access-log line,
its audit record, its share of the overhead and backoff histograms, its retries and
hedges, and the headers its upstream requests carry. A real gateway on the simulator."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ai_service.config import parse_config
from ai_service.observability.logging import JsonFormatter
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import TEST_ENV, TEST_KEY, StartGateway, config_tree
from tests.integration.test_observability import METRICS_ON_ANY_PORT, scrape, value

CALLER_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def ask(text: str = "hello", model: str = "sim-gpt") -> ChatCompletionRequest:
    return ChatCompletionRequest(model=model, messages=[Message(role="user", content=text)])


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    """The access log's lines, as the production JSON handler writes them."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("ai_service.access")
    level = access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        access.removeHandler(handler)
        access.setLevel(level)


def by_request_id(lines: io.StringIO) -> dict[str, dict[str, Any]]:
    entries = [json.loads(line) for line in lines.getvalue().splitlines()]
    found = {entry["request_id"]: entry for entry in entries}
    assert len(found) == len(entries), "one line per call"
    return found


async def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the state never came"
        await asyncio.sleep(0.01)


def rid(name: str) -> list[tuple[str, str]]:
    return [("x-request-id", name)]


async def failing(call: Any) -> grpc.StatusCode:
    with pytest.raises(AIServiceError) as caught:
        await call
    code: grpc.StatusCode = caught.value.code
    return code


async def streamed(client: AsyncAIClient, request: ChatCompletionRequest, name: str) -> None:
    async for _ in client.stream_chat(request, metadata=rid(name)):
        pass


async def test_every_call_logs_one_access_line_whatever_ended_it(
    start_gateway: StartGateway, simulator: Simulator, access_lines: io.StringIO
) -> None:
    gateway = await start_gateway(resilience={"retries": {"backoff_base_ms": 1}})
    async with (
        AsyncAIClient(gateway.address, TEST_KEY, timeout=10, service_config="") as client,
        AsyncAIClient(gateway.address, "not-a-key-0123456789", service_config="") as stranger,
    ):
        answer = await client.chat(ask(), metadata=rid("ok"))
        await streamed(client, ask("/tokens 5"), "stream-ok")
        assert await failing(stranger.chat(ask(), metadata=rid("no-key"))) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert await failing(client.chat(ask(model="no\nsuch"), metadata=rid("unknown"))) == (
            grpc.StatusCode.NOT_FOUND
        )
        simulator.add_fault(FaultRule("status", status=400, times=1))
        assert await failing(client.chat(ask(), metadata=rid("upstream-4xx"))) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        simulator.add_fault(FaultRule("status", status=503, times=3))
        assert await failing(client.chat(ask(), metadata=rid("unavailable"))) == (
            grpc.StatusCode.UNAVAILABLE
        )
        simulator.add_fault(FaultRule("cut", after_chunks=3, times=1))
        assert await failing(streamed(client, ask("/tokens 40"), "cut")) == (
            grpc.StatusCode.UNAVAILABLE
        )

    lines = by_request_id(access_lines)
    assert set(lines) == {
        "ok",
        "stream-ok",
        "no-key",
        "unknown",
        "upstream-4xx",
        "unavailable",
        "cut",
    }
    ok = lines["ok"]
    assert ok["message"] == "call" and ok["level"] == "info"
    assert ok["key"] == "tester" and ok["method"] == "ChatCompletion"
    assert ok["model_requested"] == ok["model"] == "sim-gpt"
    assert ok["model_served"] == answer.model and ok["deployment"] == "simulator/sim-gpt-1"
    assert (ok["status"], ok["reason"], ok["upstream_status"], ok["attempts"]) == ("OK", "", 200, 1)
    assert ok["input_tokens"] == answer.usage.prompt_tokens
    assert ok["output_tokens"] == answer.usage.completion_tokens
    assert ok["latency_ms"] > 0 and "ttft_ms" not in ok
    stream = lines["stream-ok"]
    assert stream["method"] == "StreamChatCompletion" and stream["output_tokens"] == 5
    assert 0 < stream["ttft_ms"] <= stream["latency_ms"]

    no_key = lines["no-key"]
    assert (no_key["status"], no_key["reason"], no_key["key"]) == (
        "UNAUTHENTICATED",
        "UNAUTHENTICATED",
        "",
    )
    unknown = lines["unknown"]
    assert (unknown["status"], unknown["reason"]) == ("NOT_FOUND", "MODEL_NOT_FOUND")
    # The caller's text is quoted when it is not printable: no forged line.
    assert unknown["model_requested"] == repr("no\nsuch") and unknown["model"] == ""
    assert unknown["attempts"] == 0 and unknown["upstream_status"] is None
    refused = lines["upstream-4xx"]
    assert (refused["status"], refused["reason"]) == (
        "INVALID_ARGUMENT",
        "UPSTREAM_INVALID_REQUEST",
    )
    assert (refused["upstream_status"], refused["attempts"]) == (400, 1)
    assert refused["deployment"] == "simulator/sim-gpt-1"
    down = lines["unavailable"]
    assert (down["status"], down["reason"]) == ("UNAVAILABLE", "UPSTREAM_UNAVAILABLE")
    assert (down["upstream_status"], down["attempts"]) == (503, 3)
    assert down["deployment"] == "simulator/sim-gpt-1" and down["model_served"] == "sim-gpt-1"
    cut = lines["cut"]
    assert (cut["status"], cut["reason"]) == ("UNAVAILABLE", "STREAM_INTERRUPTED")
    # The stream began with a 200; its chunks and their text reached the caller.
    assert cut["upstream_status"] == 200 and cut["chunks"] >= 1
    assert cut["output_tokens"] > 0 and cut["output_tokens_estimated"] is True
    assert cut["ttft_ms"] is not None


async def test_successes_are_sampled_and_failures_never(
    start_gateway: StartGateway, access_lines: io.StringIO
) -> None:
    gateway = await start_gateway(observability={"access_log": {"success_sample_ratio": 0}})
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        for i in range(5):
            await client.chat(ask(), metadata=rid(f"ok-{i}"))
        await failing(client.chat(ask(model="no-such-model"), metadata=rid("failed")))
    # Of this test's calls (a call of an earlier test's gateway may still end meanwhile).
    issued = {f"ok-{i}" for i in range(5)} | {"failed"}
    assert set(by_request_id(access_lines)) & issued == {"failed"}


async def test_audit_records_of_failed_and_cut_calls_name_the_deployment_and_the_tokens(
    simulator: Simulator, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    tree = config_tree(
        simulator.base_url,
        observability={"metrics": {"enabled": False}, "audit": {"path": str(path)}},
        resilience={"retries": {"backoff_base_ms": 1}},
    )
    async with (
        Gateway(parse_config(tree, env=TEST_ENV)) as gateway,
        AsyncAIClient(gateway.address, TEST_KEY, timeout=10, service_config="") as client,
    ):
        simulator.add_fault(FaultRule("status", status=503, times=3))
        await failing(client.chat(ask(), metadata=rid("failed")))
        simulator.add_fault(FaultRule("cut", after_chunks=3, times=1))
        delivered = ""
        with pytest.raises(AIServiceError) as cut:
            async for chunk in client.stream_chat(ask("/tokens 40"), metadata=rid("cut")):
                delivered += "".join(choice.delta.content for choice in chunk.choices)
        assert cut.value.code is grpc.StatusCode.UNAVAILABLE
    records = {r["request_id"]: r for r in map(json.loads, path.read_text().splitlines())}

    failed = records["failed"]
    assert (failed["status"], failed["reason"], failed["attempts"]) == (
        "UNAVAILABLE",
        "UPSTREAM_UNAVAILABLE",
        3,
    )
    assert failed["provider"] == "simulator" and failed["deployment"] == "simulator/sim-gpt-1"
    assert failed["model_served"] == "sim-gpt-1"
    assert failed["deployments_tried"] == ["simulator/sim-gpt-1"] * 3
    assert failed["output_tokens"] == 0

    stream = records["cut"]
    assert (stream["status"], stream["reason"]) == ("UNAVAILABLE", "STREAM_INTERRUPTED")
    assert stream["deployment"] == "simulator/sim-gpt-1"
    assert stream["deployments_tried"] == ["simulator/sim-gpt-1"]
    assert stream["chunks_delivered"] >= 1 and delivered
    # What the caller got, estimated as the token budget estimates text (4 characters).
    assert stream["output_tokens"] == -(-len(delivered) // 4)
    assert stream["output_tokens_estimated"] is True


async def test_overhead_is_the_gateway_own_time_and_backoff_has_its_histogram(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(observability=METRICS_ON_ANY_PORT)
    # A 429 with Retry-After: 1 on the only deployment: the call waits a second, then
    # is answered by its second attempt.
    simulator.add_fault(FaultRule("status", status=429, retry_after=1, times=1))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10, service_config="") as client:
        await client.chat(ask())
    m = await scrape(gateway)
    backoff = value(m, "ai_gateway_retry_backoff_duration_seconds_sum", model="sim-gpt")
    assert value(m, "ai_gateway_retry_backoff_duration_seconds_count") == 1
    assert backoff >= 0.99
    duration = value(m, "ai_gateway_request_duration_seconds_sum")
    upstream = value(m, "gen_ai_client_operation_duration_seconds_sum")
    assert value(m, "gen_ai_client_operation_duration_seconds_count") == 2
    # The call's time is the gateway's, the upstream's and the wait between them.
    overhead = value(m, "ai_gateway_overhead_duration_seconds_sum")
    assert overhead == pytest.approx(duration - upstream - backoff, abs=1e-9)
    assert value(m, "ai_gateway_slot_wait_duration_seconds_count") == 0
    assert value(m, "ai_gateway_retries_total") == 1 and value(m, "ai_gateway_hedges_total") == 0


async def test_a_wait_for_a_deployment_slot_is_not_overhead(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(
        observability=METRICS_ON_ANY_PORT,
        models=[
            {
                "name": "sim-gpt",
                "deployments": [
                    {"provider": "simulator", "upstream_model": "sim-gpt-1", "max_concurrency": 1}
                ],
            }
        ],
    )
    simulator.config.latency_ms = 200
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        first = asyncio.ensure_future(client.chat(ask()))
        await wait_for(lambda: simulator.stats.total_requests == 1)
        await client.chat(ask())  # waits for the first call's slot
        await first
    m = await scrape(gateway)
    assert value(m, "ai_gateway_slot_wait_duration_seconds_count", model="sim-gpt") == 1
    waited = value(m, "ai_gateway_slot_wait_duration_seconds_sum")
    duration = value(m, "ai_gateway_request_duration_seconds_sum")
    upstream = value(m, "gen_ai_client_operation_duration_seconds_sum")
    overhead = value(m, "ai_gateway_overhead_duration_seconds_sum")
    assert waited > 0
    assert overhead == pytest.approx(duration - upstream - waited, abs=1e-9)


async def test_hedges_are_counted_apart_from_retries(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(
        observability=METRICS_ON_ANY_PORT,
        models=[
            {
                "name": "sim-gpt",
                "deployments": [
                    {"provider": "simulator", "upstream_model": "sim-gpt-1"},
                    {"provider": "simulator", "upstream_model": "sim-gpt-2"},
                ],
                "hedge_after_ms": 20,
            }
        ],
    )
    # Whichever deployment is asked first is slow: the second is started beside it.
    simulator.add_fault(FaultRule("latency", seconds=1, times=1))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        await client.chat(ask())
    m = await scrape(gateway)
    assert value(m, "ai_gateway_hedges_total", model="sim-gpt") == 1
    assert value(m, "ai_gateway_retries_total") == 0


async def test_upstream_requests_carry_the_request_id_and_the_callers_trace_untraced(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway()
    assert gateway.observability.tracing is None
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        traced = [("traceparent", CALLER_TRACEPARENT), ("tracestate", "vendor=1")]
        await client.chat(ask(), metadata=[*rid("with-trace"), *traced])
        await streamed(client, ask("/tokens 3"), "streamed")
        await client.chat(ask(), metadata=[*rid("bad-trace"), ("traceparent", "00-nonsense")])
        await client.chat(ask())  # no id of the caller's: the gateway's own goes upstream
    with_trace, stream, bad, fresh = simulator.stats.received
    # Not traced here: the caller's trace context passes through as it came.
    assert with_trace.headers["x-request-id"] == "with-trace"
    assert with_trace.headers["traceparent"] == CALLER_TRACEPARENT
    assert with_trace.headers["tracestate"] == "vendor=1"
    assert stream.headers["x-request-id"] == "streamed" and "traceparent" not in stream.headers
    assert bad.headers["x-request-id"] == "bad-trace" and "traceparent" not in bad.headers
    assert len(fresh.headers["x-request-id"]) == 24


async def test_metrics_say_why_calls_failed_whether_models_can_be_served_and_the_process(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(
        observability=METRICS_ON_ANY_PORT,
        resilience={
            "retries": {"max_attempts": 1},
            "circuit_breaker": {"consecutive_failures": 1, "open_seconds": 60},
        },
    )
    simulator.add_fault(FaultRule("status", model="sim-other-1", status=503))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10, service_config="") as client:
        await client.chat(ask())
        await failing(client.chat(ask(model="sim-other")))  # opens the circuit
        await failing(client.chat(ask(model="sim-other")))  # refused: no healthy deployment
        await failing(client.chat(ask(model="no-such-model")))
        [chunk async for chunk in client.stream_chat(ask("/tokens 3"))]
        simulator.add_fault(FaultRule("status", model="sim-gpt-1", status=400, times=1))
        await failing(streamed(client, ask(), "no-token"))
    m = await scrape(gateway)
    requests = "ai_gateway_requests_total"
    assert value(m, requests, code="OK", reason="") == 2
    assert value(m, requests, model="sim-other", reason="UPSTREAM_UNAVAILABLE") == 1
    assert value(m, requests, model="sim-other", reason="NO_HEALTHY_DEPLOYMENT") == 1
    assert value(m, requests, code="NOT_FOUND", reason="MODEL_NOT_FOUND") == 1
    assert value(m, "ai_gateway_model_serving", model="sim-gpt") == 1
    assert value(m, "ai_gateway_model_serving", model="sim-other") == 0
    # GenAI attributes as labels, the deprecated one beside them for a release.
    upstream = "gen_ai_client_operation_duration_seconds_count"
    labels = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai"}
    assert value(m, upstream, **labels, gen_ai_system="openai") == 4
    assert value(m, "gen_ai_client_token_usage_count", **labels, gen_ai_token_type="input") == 2
    # Time to first token: the stream that produced one, not the one that failed first.
    ttft = "gen_ai_server_time_to_first_token_seconds_count"
    assert value(m, ttft, **labels, model="sim-gpt") == 1
    assert value(m, "process_resident_memory_bytes") > 0
    assert value(m, "process_cpu_seconds_total") > 0
    assert value(m, "process_open_fds") > 0
