"""Token budgets, the response cache, single-flight, and Redis failure: one gateway process.

Redis-backed variants use a real redis-server on a free port (tests/servers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis.asyncio as aioredis

from ai_service.config import SharedStateSettings
from ai_service.limits.shared_state import RedisUnavailable, SharedRedis
from ai_service.pipeline.cache import RedisCache, SingleFlight
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import (
    AIServiceError,
    AsyncAIClient,
    ChatCompletionRequest,
    Message,
    UnavailableError,
)
from ai_service_protos.ai_service_pb2 import ChatCompletionResponse, RequestOptions
from tests.conftest import (
    RESTRICTED_KEY,
    TEST_KEY,
    StartGateway,
    free_port,
    token_budgeted_keys,
    until,
)
from tests.servers import RedisServer, redis_server


def ask(text: str = "hello", **params: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model="sim-gpt", messages=[Message(role="user", content=text)], **params
    )


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    with redis_server(free_port(), tmp_path) as server:
        yield server


def shared(redis: RedisServer, **overrides: Any) -> dict[str, Any]:
    return {"backend": "redis", "redis_url": redis.url, "timeout_ms": 200, **overrides}


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_token_budget_admits_what_the_usage_allows(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path, backend: str
) -> None:
    budget = 140
    overrides: dict[str, Any] = {
        "rate_limit": {"requests_per_minute": 0, "tokens_per_minute": budget}
    }
    with redis_server(free_port(), tmp_path) as server:
        if backend == "redis":
            overrides["shared_state"] = shared(server)
        gateway = await start_gateway(**overrides)
        async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
            first = await client.chat(ask(max_tokens=5))
            per_call = first.usage.total_tokens
            served, refused = 1, None
            for _ in range(100):
                try:
                    await client.chat(ask(max_tokens=5))
                    served += 1
                except AIServiceError as error:
                    refused = error
                    break
    assert refused is not None
    assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tokens/minute" in refused.message
    assert refused.retry_after is not None and refused.retry_after > 0
    # Settled against the real usage, not the (larger) estimate: the budget buys
    # budget / per_call calls, give or take the last reservation and the refill.
    assert abs(served - budget / per_call) <= 2, (served, per_call)
    assert simulator.stats.total_requests == served


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_deterministic_answers_are_cached_and_say_so(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path, backend: str
) -> None:
    with redis_server(free_port(), tmp_path) as server:
        overrides: dict[str, Any] = {"cache": {"enabled": True}}
        if backend == "redis":
            overrides["shared_state"] = shared(server)
        gateway = await start_gateway(**overrides)
        async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
            first = await client.chat(ask(temperature=0))
            second = await client.chat(ask(temperature=0, user="someone-else"))
            streamed = [c async for c in client.stream_chat(ask(temperature=0))]
            bypass = await client.chat(
                ask(temperature=0, options=RequestOptions(bypass_cache=True))
            )
            random_once = await client.chat(ask(temperature=0.7))
            random_twice = await client.chat(ask(temperature=0.7))
            seeded = [await client.chat(ask(seed=7)) for _ in range(2)]
    assert not first.cached and second.cached
    assert second.choices == first.choices and second.usage == first.usage
    assert second.deployment == first.deployment
    assert all(chunk.cached for chunk in streamed)
    assert "".join(c.choices[0].delta.content for c in streamed if c.choices) == (
        first.choices[0].message.content
    )
    assert streamed[-1].usage == first.usage and streamed[-1].choices[0].finish_reason == "stop"
    assert not bypass.cached and not random_once.cached and not random_twice.cached
    assert [s.cached for s in seeded] == [False, True]
    # first, bypass, the two random ones, the first seeded one.
    assert simulator.stats.total_requests == 5


async def test_errors_are_never_cached_and_a_finished_stream_fills_the_cache(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(
        cache={"enabled": True}, resilience={"retries": {"max_attempts": 1}}
    )
    # No gRPC-level retry either (the client's default service config would retry).
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10, service_config="") as client:
        simulator.add_fault(FaultRule("status", status=500, times=1))
        with pytest.raises(UnavailableError):
            await client.chat(ask(temperature=0))
        streamed = [c async for c in client.stream_chat(ask(temperature=0))]
        cached = await client.chat(ask(temperature=0))
    assert not streamed[0].cached
    assert cached.cached
    assert cached.choices[0].message.content == "You said: hello"
    assert simulator.stats.total_requests == 2


async def test_identical_concurrent_calls_share_one_upstream_call(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(cache={"enabled": True})
    simulator.config.latency_ms = 300
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        answers = await asyncio.gather(*(client.chat(ask(temperature=0)) for _ in range(10)))
    assert {a.choices[0].message.content for a in answers} == {"You said: hello"}
    assert simulator.stats.total_requests == 1
    assert len(gateway.answers.flights) == 0  # nothing left in flight


async def test_single_flight_survives_its_first_caller_leaving(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(cache={"enabled": True})
    simulator.config.latency_ms = 1000
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        leader, follower = await _in_one_flight(
            gateway, client.chat(ask(temperature=0)), client.chat(ask(temperature=0))
        )
        leader.cancel()
        answer = await follower
    assert answer.choices[0].message.content == "You said: hello"
    assert simulator.stats.total_requests == 1


async def _in_one_flight(
    gateway: Gateway, *calls: Coroutine[Any, Any, ChatCompletionResponse]
) -> list[asyncio.Task[ChatCompletionResponse]]:
    """Start `calls` one after the other, each once the ones before wait in one flight."""
    tasks = []
    for waiting, call in enumerate(calls, 1):
        tasks.append(asyncio.create_task(call))
        await _flight_with_waiters(gateway, waiting)
    return tasks


async def _flight_with_waiters(gateway: Gateway, waiters: int) -> None:
    deadline = time.monotonic() + 10
    flights = gateway.answers.flights
    while [flight.waiters for flight in flights._flights.values()] != [waiters]:
        assert time.monotonic() < deadline, "the calls never met in one flight"
        await asyncio.sleep(0.01)


async def test_a_caller_arriving_as_the_last_one_leaves_gets_fresh_work() -> None:
    flights: SingleFlight[int] = SingleFlight()
    runs = 0

    async def work() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return runs

    leaving = asyncio.ensure_future(flights.run("k", work))
    await until(lambda: runs == 1, "the work started")
    leaving.cancel()  # the only waiter goes: its work is cancelled ...
    # ... and a caller that comes in the same loop turn must not join that work.
    arriving = asyncio.ensure_future(flights.run("k", work))
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert await arriving == (2, False)


async def _rpm_gateway(
    start_gateway: StartGateway, redis: RedisServer, policy: str, metrics_port: int = 0
) -> Gateway:
    return await start_gateway(
        rate_limit={"requests_per_minute": 1000},
        # No leases: every call asks Redis, so the policy shows on the very next call
        # (with leases a replica spends what it already holds first).
        # A second to answer: a loaded machine must not pass for a failing Redis.
        shared_state=shared(redis, on_failure=policy, lease_fraction=0, timeout_ms=1000),
        cache={"enabled": True},
        observability={"metrics": {"listen": f"127.0.0.1:{metrics_port or free_port()}"}},
    )


async def test_redis_down_fail_open_serves_and_recovers(
    start_gateway: StartGateway, simulator: Simulator, redis: RedisServer
) -> None:
    metrics_port = free_port()
    gateway = await _rpm_gateway(start_gateway, redis, "open", metrics_port)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=5) as client:
        assert (await client.chat(ask(temperature=0))).choices
        redis.stop()
        for _ in range(5):  # no limits and no cache, but every call is answered
            response = await client.chat(ask(temperature=0))
            assert not response.cached
        assert gateway.shared_redis is not None and gateway.shared_redis.failures >= 1
        async with httpx.AsyncClient() as http:  # the failures are a metric too
            scrape = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        counted = [
            float(line.split()[-1])
            for line in scrape.splitlines()
            if line.startswith("ai_gateway_shared_state_failures_total")
        ]
        assert counted and counted[0] >= 1
        assert "ai_gateway_shared_state_failure_mode 1.0" in scrape.splitlines()
        redis.start()
        # The gateway asks Redis again a second after a failure: then a call fills the
        # cache again, and the next is answered from it.
        deadline = time.monotonic() + 10
        while not (await client.chat(ask(temperature=0))).cached:
            assert time.monotonic() < deadline, "the cache never came back"
            await asyncio.sleep(0.2)


async def test_redis_down_fail_closed_refuses_quickly_and_recovers(
    start_gateway: StartGateway, simulator: Simulator, redis: RedisServer
) -> None:
    gateway = await _rpm_gateway(start_gateway, redis, "closed")
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=5) as client:
        assert (await client.chat(ask())).choices
        redis.stop()
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask())
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        assert caught.value.reason == "SHARED_STATE_UNAVAILABLE"
        requests_before = simulator.stats.total_requests
        redis.start()
        # The gateway asks Redis again a second after a failure: refused until then.
        deadline = time.monotonic() + 10
        while True:
            try:
                assert (await client.chat(ask())).choices
                break
            except AIServiceError as error:  # refused until it has seen Redis back
                assert error.reason == "SHARED_STATE_UNAVAILABLE"
                assert time.monotonic() < deadline, "never recovered"
                await asyncio.sleep(0.2)
    assert simulator.stats.total_requests == requests_before + 1  # refusals cost nothing


async def _served_once(client: AsyncAIClient) -> None:
    """A first call served. On a loaded machine the first call (connections opened,
    scripts loaded) may itself stall past a short timeout_ms: refused as such, it is
    asked again."""
    for _ in range(50):
        try:
            assert (await client.chat(ask())).choices
            return
        except AIServiceError as error:
            assert error.reason == "SHARED_STATE_UNAVAILABLE", error
            await asyncio.sleep(0.1)
    raise AssertionError("no call was served in 50 tries")


async def test_one_stall_costs_only_the_calls_it_caught(
    start_gateway: StartGateway, simulator: Simulator, redis: RedisServer
) -> None:
    """A Redis that stalls past timeout_ms once (a fork, a busy moment, this process
    descheduled) fails the calls it caught; the next call asks Redis again, and with
    on_failure closed is served, not refused for a second."""
    gateway = await start_gateway(
        rate_limit={"requests_per_minute": 1000},
        shared_state=shared(redis, on_failure="closed", lease_fraction=0, timeout_ms=100),
    )
    async with (
        # No retries by gRPC: every call shows what the gateway answered it.
        AsyncAIClient(gateway.address, TEST_KEY, timeout=5, service_config="") as client,
        aioredis.Redis.from_url(redis.url) as admin,
    ):
        await _served_once(client)  # the pool's connections open, the scripts load
        await admin.execute_command("CLIENT", "PAUSE", "300", "ALL")  # 3 timeouts long
        caught = await asyncio.gather(
            *(client.chat(ask()) for _ in range(10)), return_exceptions=True
        )
        assert await admin.ping()  # answered once the stall is over
        assert all(
            isinstance(c, AIServiceError) and c.reason == "SHARED_STATE_UNAVAILABLE" for c in caught
        ), caught
        assert (await client.chat(ask())).choices
    assert gateway.shared_redis is not None and not gateway.shared_redis.failure_mode


async def test_failures_in_a_row_switch_the_mode_once_and_back_once(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    shared_redis = SharedRedis(
        SharedStateSettings(backend="redis", redis_url=redis.url, switch_after_failures=3)
    )

    async def ping() -> object:
        return await shared_redis.run(lambda client: client.ping())

    try:
        assert await ping()
        redis.stop()
        for _ in range(2):
            with pytest.raises(RedisUnavailable):
                await ping()
            assert not shared_redis.failure_mode  # Redis is still asked
        with pytest.raises(RedisUnavailable):
            await ping()
        assert shared_redis.failure_mode
        asked = shared_redis.failures
        with pytest.raises(RedisUnavailable):
            await ping()
        assert shared_redis.failures == asked  # the policy applies without asking Redis
        redis.start()
        deadline = time.monotonic() + 10
        while True:  # asked again once a second
            with contextlib.suppress(RedisUnavailable):
                if await ping():
                    break
            assert time.monotonic() < deadline, "never came back"
            await asyncio.sleep(0.1)
        assert not shared_redis.failure_mode
    finally:
        await shared_redis.aclose()
    messages = [r.getMessage() for r in caplog.records if r.name.endswith("shared_state")]
    assert messages == ["redis unavailable; applying on_failure=open", "redis is back"]


async def test_connections_closed_by_a_healthy_redis_are_not_a_failure(
    start_gateway: StartGateway, simulator: Simulator, redis: RedisServer
) -> None:
    # Redis's `timeout`, a proxy's idle timeout or a restart closes pooled connections;
    # the next command on one must reconnect, not refuse calls as if Redis were down.
    gateway = await _rpm_gateway(start_gateway, redis, "closed")
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=5) as client:
        assert (await client.chat(ask())).choices
        async with aioredis.Redis.from_url(redis.url) as admin:
            killed = await admin.execute_command(
                "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
            )
        assert killed >= 1
        for _ in range(3):
            assert (await client.chat(ask())).choices
    assert gateway.shared_redis is not None and gateway.shared_redis.failures == 0


async def _burst(shared: SharedRedis, calls: int) -> list[object]:
    return await asyncio.gather(
        *(shared.run(lambda client: client.incr(shared.key("burst"))) for _ in range(calls)),
        return_exceptions=True,
    )


async def test_a_burst_beyond_the_pool_waits_for_a_connection(redis: RedisServer) -> None:
    # More concurrent Redis calls than pooled connections (100 by default) while Redis
    # stalls well within timeout_ms: the extras wait for a connection, none fails.
    shared = SharedRedis(SharedStateSettings(backend="redis", redis_url=redis.url, timeout_ms=5000))
    async with aioredis.Redis.from_url(redis.url) as admin:
        try:
            await admin.execute_command("CLIENT", "PAUSE", "300", "ALL")
            results = await _burst(shared, 150)
        finally:
            await shared.aclose()
    assert not [r for r in results if isinstance(r, BaseException)]
    assert sorted(r for r in results if isinstance(r, int)) == list(range(1, 151))
    assert shared.failures == 0


async def test_a_cached_entry_lives_in_redis_for_the_seconds_asked(redis: RedisServer) -> None:
    shared = SharedRedis(SharedStateSettings(backend="redis", redis_url=redis.url, timeout_ms=5000))
    cache = RedisCache(shared)
    try:
        # A TTL so long that a millisecond per second too few or too many shows.
        await cache.put("k", b"answer", 1_000_000.5)
        assert await cache.get("k") == b"answer"
        await cache.put("brief", b"x", 0.0001)  # under a millisecond: stored for one
        async with aioredis.Redis.from_url(redis.url) as admin:
            left = await admin.pttl(shared.key("cache", "k"))
        assert 999_990_000 < left <= 1_000_000_500  # within 10 s of the put
        assert shared.failures == 0  # Redis took both
    finally:
        await shared.aclose()


async def test_the_pool_is_bounded_by_max_connections(redis: RedisServer) -> None:
    settings = SharedStateSettings(
        backend="redis", redis_url=redis.url, timeout_ms=5000, max_connections=2
    )
    shared = SharedRedis(settings)
    async with aioredis.Redis.from_url(redis.url) as admin:
        try:
            await admin.execute_command("CLIENT", "PAUSE", "200", "ALL")
            results = await _burst(shared, 20)
            clients = (await admin.info("clients"))["connected_clients"]
        finally:
            await shared.aclose()
    assert not [r for r in results if isinstance(r, BaseException)]
    assert clients <= 3  # the pool's two and this one
    assert shared.failures == 0


async def test_the_wait_for_a_free_connection_is_bounded_by_the_timeout(
    redis: RedisServer,
) -> None:
    settings = SharedStateSettings(
        backend="redis", redis_url=redis.url, timeout_ms=200, max_connections=1
    )
    shared = SharedRedis(settings)
    async with aioredis.Redis.from_url(redis.url) as admin:
        try:
            await shared.run(lambda client: client.ping())  # connected before the stall
            # Paused for 5 s: a call that waited for Redis would end in success, late.
            await admin.execute_command("CLIENT", "PAUSE", "5000", "ALL")
            results = await _burst(shared, 3)
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
            await shared.aclose()
    # One call holds the only connection, the others queue for it: all fail at the
    # timeout, while Redis is still paused; none waits for Redis.
    assert all(isinstance(r, RedisUnavailable) for r in results)


async def test_a_flight_is_paid_by_its_first_caller_even_if_it_leaves(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # The flight settles its first caller's reservation with what the upstream used,
    # however long that caller stays; one that shared the answer pays nothing.
    gateway = await start_gateway(
        cache={"enabled": True},
        auth=token_budgeted_keys(200),
    )
    simulator.config.latency_ms = 500
    long_answer = ask("/tokens 100", temperature=0, max_tokens=150)  # reserves ~160
    async with (
        AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as payer,
        AsyncAIClient(gateway.address, RESTRICTED_KEY, timeout=10) as sharer,
    ):
        leader, follower = await _in_one_flight(
            gateway, payer.chat(long_answer), sharer.chat(long_answer)
        )
        leader.cancel()
        assert (await follower).usage.completion_tokens == 100
        # The leader was charged the ~110 tokens used, not its prompt alone: another
        # reservation of ~160 no longer fits in its 200.
        with pytest.raises(AIServiceError) as caught:
            await payer.chat(ask("/tokens 100", max_tokens=150))
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert simulator.stats.total_requests == 1


async def test_a_call_that_shared_a_flight_is_audited_with_the_deployment_that_answered(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    gateway = await start_gateway(
        cache={"enabled": True},
        observability={"metrics": {"enabled": False}, "audit": {"path": str(audit)}},
    )
    simulator.config.latency_ms = 1000
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        calls = await _in_one_flight(
            gateway, client.chat(ask(temperature=0)), client.chat(ask(temperature=0))
        )
        answers = await asyncio.gather(*calls)
    await gateway.stop()  # the audit log is flushed
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert (
        {a.deployment for a in answers}
        == {r["deployment"] for r in records}
        == {"simulator/sim-gpt-1"}
    )
    # The one that shared made no attempt and spent nothing: tokens are counted once.
    assert sorted((r["attempts"], r["output_tokens"] > 0) for r in records) == [
        (0, False),
        (1, True),
    ]
