"""The audit log: a record per call, no secret anywhere, nothing lost on SIGTERM."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ai_service.config import parse_config
from ai_service.observability.logging import JsonFormatter
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import (
    AIServiceError,
    AsyncAIClient,
    AuthenticationError,
    ChatCompletionRequest,
    InternalError,
    Message,
)
from ai_service_protos import ai_service_pb2_grpc
from tests.conftest import (
    PROVIDER_SECRET,
    TEST_ENV,
    TEST_KEY,
    config_tree,
    free_port,
    until,
    write_config,
)
from tests.processes import ANY_PORT, gateway_address, gateway_argv, spawn, wait_serving
from tests.servers import redis_server


def ask(text: str = "hello") -> ChatCompletionRequest:
    return ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content=text)])


def read_audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_no_key_reaches_logs_spans_or_audit_records(
    simulator: Simulator, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.jsonl"
    tree = config_tree(simulator.base_url)
    tree["observability"] = {
        "metrics": {"enabled": False},
        "audit": {"path": str(audit_path), "include_prompts": True},
    }
    exporter = InMemorySpanExporter()
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        async with Gateway(parse_config(tree, env=TEST_ENV), span_exporter=exporter) as gateway:
            async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
                answer = await client.chat(ask(f"my provider key is {PROVIDER_SECRET}"))
                chunks = [c async for c in client.stream_chat(ask("/tokens 5"))]
                # The upstream refuses the provider key and quotes it back, as OpenAI does.
                simulator.add_fault(
                    FaultRule("status", status=401, message=f"Incorrect key {PROVIDER_SECRET}")
                )
                with pytest.raises(InternalError):
                    await client.chat(ask())
            async with AsyncAIClient(gateway.address, TEST_KEY + "-wrong") as wrong:
                with pytest.raises(AuthenticationError):
                    await wrong.chat(ask())
    finally:
        root.removeHandler(handler)
        root.setLevel(level)

    *records, refusals = read_audit(audit_path)
    assert [r["status"] for r in records] == ["OK", "OK", "INTERNAL"]
    # The wrong key's call is counted in the summary of refusals, not recorded alone.
    assert refusals["event"] == "refusals"
    assert refusals["refused"] == {"UNAUTHENTICATED": 1}
    first = records[0]
    assert first["key"] == "tester" and first["model"] == "sim-gpt"
    assert first["model_served"] == answer.model and first["provider"] == "simulator"
    assert first["input_tokens"] == answer.usage.prompt_tokens
    assert first["output_tokens"] == answer.usage.completion_tokens
    assert first["prompt"] == "user: my provider key is [REDACTED:SECRET]"
    # The answer reflected the provider key: scrubbed before the caller (or the audit
    # log) got it.
    assert first["answer"] == "You said: my provider key is ***"
    assert first["latency_ms"] > 0 and first["cache_hit"] is False
    # A streamed answer is kept whole, as its caller read it.
    streamed = "".join(choice.delta.content for chunk in chunks for choice in chunk.choices)
    assert streamed and records[1]["answer"] == streamed
    assert records[2]["reason"] == "UPSTREAM_AUTH"

    texts = {
        "log": lines.getvalue(),
        "audit": audit_path.read_text(encoding="utf-8"),
        "spans": "\n".join(span.to_json() for span in exporter.get_finished_spans()),
    }
    assert texts["log"] and texts["spans"]
    for where, text in texts.items():
        assert TEST_KEY not in text, where
        assert PROVIDER_SECRET not in text, where
        assert "Bearer" not in text, where


async def test_calls_without_a_key_are_counted_and_never_push_served_records_out(
    simulator: Simulator, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.jsonl"
    tree = config_tree(simulator.base_url)
    tree["observability"] = {
        "metrics": {"enabled": False},
        "audit": {
            "path": str(audit_path),
            "max_bytes": 8192,
            "backup_count": 1,
            "refusal_summary_seconds": 0.2,
        },
    }
    flood = 2000
    long_id = "x" * 128  # a caller's id past 64 characters is not taken
    async with Gateway(parse_config(tree, env=TEST_ENV)) as gateway:
        async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
            await client.chat(ask(), metadata=[("x-request-id", "served-before-the-flood")])
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            chat = channel.unary_unary("/ai_service.v1.AIService/ChatCompletion")
            request = ask().SerializeToString()
            for start in range(0, flood, 50):
                outcomes = await asyncio.gather(
                    *(
                        chat(request, metadata=[("x-request-id", long_id)], timeout=10)
                        for _ in range(start, start + 50)
                    ),
                    return_exceptions=True,
                )
                # Refused; past the failed-authentication burst, throttled.
                assert all(
                    isinstance(o, grpc.aio.AioRpcError)
                    and o.code()
                    in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED)
                    for o in outcomes
                )
    files = sorted(await asyncio.to_thread(lambda: list(tmp_path.glob("audit.jsonl*"))))
    records = [record for file in files for record in read_audit(file)]
    served = [r for r in records if "event" not in r]
    assert [r["request_id"] for r in served] == ["served-before-the-flood"]
    summaries = [r for r in records if r.get("event") == "refusals"]
    assert sum(sum(s["refused"].values()) for s in summaries) == flood
    assert set().union(*(s["refused"] for s in summaries)) == {"UNAUTHENTICATED", "AUTH_THROTTLED"}
    assert all(long_id not in file.read_text(encoding="utf-8") for file in files)


async def test_a_request_id_is_taken_up_to_64_plain_characters(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        for request_id, taken in (("a" * 64, True), ("a" * 65, False), ("id with spaces", False)):
            call = stub.ChatCompletion(
                ask(),
                metadata=[("authorization", f"Bearer {TEST_KEY}"), ("x-request-id", request_id)],
                timeout=10,
            )
            await call
            trailers = dict(await call.trailing_metadata())
            assert (trailers["x-request-id"] == request_id) is taken, request_id


async def test_audit_records_survive_sigterm_mid_traffic(
    simulator: Simulator, tmp_path: Path
) -> None:
    simulator.config.latency_ms = 300  # calls are in flight when the signal lands
    audit_path = tmp_path / "audit.jsonl"
    tree = config_tree(simulator.base_url, server__shutdown_grace_seconds=20)
    tree["observability"] = {"metrics": {"enabled": False}, "audit": {"path": str(audit_path)}}
    process = spawn(
        gateway_argv(
            "--config",
            str(write_config(tmp_path / "config.yaml", tree)),
            "--workers",
            "1",
            "--listen",
            ANY_PORT,
        ),
        tmp_path,
        "gateway",
    )
    try:
        address = await asyncio.to_thread(gateway_address, process)
        await asyncio.to_thread(wait_serving, address, process)
        succeeded: list[str] = []
        failed: list[str] = []

        async def one(client: AsyncAIClient, request_id: str) -> None:
            try:
                await client.chat(ask(), metadata=[("x-request-id", request_id)])
                succeeded.append(request_id)
            except AIServiceError:
                failed.append(request_id)

        async with AsyncAIClient(address, TEST_KEY, timeout=15) as client:
            calls = []
            # A call every 20 ms; SIGTERM after 25; go on until the gateway refuses one
            # (however long a loaded machine takes to act on the signal).
            for i in range(500):
                calls.append(asyncio.ensure_future(one(client, f"call-{i}")))
                await asyncio.sleep(0.02)
                if i == 25:
                    process.popen.send_signal(signal.SIGTERM)
                if failed:
                    break
            await asyncio.gather(*calls)
        assert await asyncio.to_thread(process.popen.wait, 30) == 0, process.output()
    finally:
        process.kill()

    records = read_audit(audit_path)
    ids = [r["request_id"] for r in records]
    assert len(ids) == len(set(ids)), "a call was recorded twice"
    ok = sorted(r["request_id"] for r in records if r["status"] == "OK")
    assert succeeded and ok == sorted(succeeded), process.output()
    assert failed, "expected calls after the signal to be refused"
    # A call refused while draining may or may not have reached the servicer; if it
    # did, its record says how it ended.
    assert set(ids) <= set(succeeded) | set(failed)


def test_records_written_in_batches_rotate_by_size_and_all_survive_close(
    tmp_path: Path,
) -> None:
    from ai_service.calls.record import CallRecord
    from ai_service.config import AuditSettings
    from ai_service.observability.audit import AuditLog

    path = tmp_path / "audit.jsonl"
    audit = AuditLog(AuditSettings(path=str(path), max_bytes=4096, backup_count=100))
    ids = [f"req-{i:04d}" for i in range(300)]
    for request_id in ids:
        call = CallRecord([audit], request_id, "ChatCompletion", streaming=False, key="k")
        call.end(grpc.StatusCode.OK, "")
    audit.close()  # drains the queue: every record is on disk when it returns
    files = sorted(tmp_path.glob("audit.jsonl*"))
    assert len(files) > 2  # 300 records of ~350 bytes do not fit in 4 KiB: rotated
    written = [record["request_id"] for file in files for record in read_audit(file)]
    assert sorted(written) == ids


async def test_calls_cut_by_the_end_of_the_grace_are_settled_and_recorded_as_seen(
    simulator: Simulator, tmp_path: Path
) -> None:
    # gRPC's stop returns before the calls it cut have unwound; Redis answering slowly
    # just then must not lose their token settlements or their audit records.
    audit_path = tmp_path / "audit.jsonl"
    budget = 100_000
    with redis_server(free_port(), tmp_path) as redis:
        tree = config_tree(simulator.base_url)
        tree["observability"] = {"metrics": {"enabled": False}, "audit": {"path": str(audit_path)}}
        # A large burst that refills slowly (100/s): what was not refunded shows.
        tree["rate_limit"] = {
            "requests_per_minute": 0,
            "tokens_per_minute": 6000,
            "token_burst": budget,
        }
        tree["shared_state"] = {
            "backend": "redis",
            "redis_url": redis.url,
            "timeout_ms": 3000,
            "lease_fraction": 0,
        }
        tree["cache"] = {"enabled": True}  # the unary call is a single flight's
        simulator.config.latency_ms = 5000
        gateway = Gateway(parse_config(tree, env=TEST_ENV))
        await gateway.start()
        async with (
            aioredis.Redis.from_url(redis.url) as admin,
            AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client,
        ):
            cacheable = ask()
            cacheable.temperature = 0
            unary = asyncio.ensure_future(client.chat(cacheable))
            streamed = asyncio.ensure_future(client.stream_chat(ask()).__anext__())
            await until(  # both wait on the upstream, ~1,000 tokens reserved each
                lambda: simulator.stats.total_requests == 2, "both calls upstream"
            )
            await admin.execute_command("CLIENT", "PAUSE", "600", "WRITE")
            # Bounded (each Redis call by its 3 s timeout): a hang fails here, with the
            # place it waited in the traceback.
            async with asyncio.timeout(60):
                await gateway.stop(0.2)
                ended = await asyncio.gather(unary, streamed, return_exceptions=True)
            left = float(await admin.hget("ai-service:limit:tokens:tester", "tokens"))
    assert [e.code.name if isinstance(e, AIServiceError) else e for e in ended] == [
        "UNAVAILABLE"
    ] * 2
    records = read_audit(audit_path)
    assert [(r["status"], r["reason"]) for r in records] == [("UNAVAILABLE", "SHUTDOWN")] * 2
    assert left > budget - 300  # each was charged its prompt only, the rest refunded
