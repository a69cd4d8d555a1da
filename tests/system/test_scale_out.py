"""Three gateway processes behind nginx (deploy/nginx.conf), sharing one redis-server.

Limits must hold globally, however nginx spreads the calls, and an answer cached
by one replica is served by another.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest

from ai_service.config import SharedStateSettings
from ai_service.limits.rules import RateRule
from ai_service.limits.shared_state import SharedRedis
from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, Message
from tests.conftest import (
    TEST_KEY,
    assert_within_a_percent,
    config_tree,
    free_port,
    open_bucket,
    paced,
    write_config,
)
from tests.processes import Process, start_gateway_process, start_simulator
from tests.servers import nginx_in_front, redis_server

RPM = 30
TPM = 120
TOKEN_KEY = "token-key-0123456789"
OPEN_KEY = "open-key-0123456789"
# A key whose burst is large enough for leases (of 3, the default 1 %).
PRECISE_KEY = "precise-key-0123456789"
PRECISE = RateRule(per_minute=6000, burst=300)
PRECISE_TOKENS_KEY = "precise-tokens-key-0123456789"
PRECISE_TOKENS = RateRule(per_minute=30_000, burst=3000)


@dataclass
class Cluster:
    front: str
    replicas: list[str]
    simulator_url: str
    redis_url: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("cluster")
    processes: list[Process] = []
    try:
        simulator, simulator_url = start_simulator(directory)
        processes.append(simulator)
        with redis_server(free_port(), directory) as redis:
            tree = config_tree(simulator_url)
            tree["auth"]["keys"] = [
                {"name": "tester", "key": TEST_KEY, "rate_limit": {"requests_per_minute": RPM}},
                {
                    "name": "tokens",
                    "key": TOKEN_KEY,
                    "rate_limit": {"requests_per_minute": 0, "tokens_per_minute": TPM},
                },
                {"name": "open", "key": OPEN_KEY, "rate_limit": {"requests_per_minute": 0}},
                {
                    "name": "precise",
                    "key": PRECISE_KEY,
                    "rate_limit": {
                        "requests_per_minute": PRECISE.per_minute,
                        "burst": PRECISE.burst,
                    },
                },
                {
                    "name": "precise-tokens",
                    "key": PRECISE_TOKENS_KEY,
                    "rate_limit": {
                        "requests_per_minute": 0,
                        "tokens_per_minute": PRECISE_TOKENS.per_minute,
                        "token_burst": PRECISE_TOKENS.burst,
                    },
                },
            ]
            # A loaded machine may stall a replica past the 100 ms default: a Redis timeout
            # lets calls through unlimited, which the measurements must not count.
            tree["shared_state"] = {"backend": "redis", "redis_url": redis.url, "timeout_ms": 2000}
            tree["cache"] = {"enabled": True}
            config = write_config(directory / "config.yaml", tree)
            replicas = []
            for i in range(3):
                args = ["--config", str(config), "--workers", "1"]
                gateway = start_gateway_process(args, directory, f"gateway-{i}")
                processes.append(gateway.process)
                replicas.append(gateway.address)
            # nginx's config names its port: it must be known before it starts.
            with nginx_in_front(free_port(), replicas, directory / "nginx") as front:
                yield Cluster(front, replicas, simulator_url, redis.url)
    finally:
        for process in processes:
            process.kill()


def call(
    address: str, key: str, text: str = "hello", **params: object
) -> tuple[grpc.StatusCode, dict[str, str], object]:
    request = ChatCompletionRequest(
        model="sim-gpt", messages=[Message(role="user", content=text)], **params
    )
    with grpc.insecure_channel(address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        try:
            response, rpc = stub.ChatCompletion.with_call(
                request, metadata=(("authorization", f"Bearer {key}"),), timeout=10
            )
        except grpc.RpcError as error:
            return error.code(), {}, None
        return grpc.StatusCode.OK, dict(rpc.trailing_metadata()), response


def upstream_calls(cluster: Cluster, model: str = "sim-gpt-1") -> int:
    stats = httpx.get(f"{cluster.simulator_url}/_sim/stats", timeout=5).json()
    return int(sum(entry["count"] for entry in stats["requests"] if entry.get("model") == model))


def test_request_limit_holds_across_replicas(cluster: Cluster) -> None:
    outcomes = [call(cluster.front, TEST_KEY, f"request {i}") for i in range(RPM + 15)]
    codes = [code for code, _, _ in outcomes]
    served = codes.count(grpc.StatusCode.OK)
    assert RPM <= served <= RPM * 1.05 + 1, codes  # a refill of one during the run at most
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    workers = {
        trailers["x-ai-worker"] for code, trailers, _ in outcomes if code == grpc.StatusCode.OK
    }
    assert len(workers) >= 2, "nginx did not spread the calls over the replicas"


def test_token_limit_holds_across_replicas(cluster: Cluster) -> None:
    code, _, first = call(cluster.front, TOKEN_KEY, "tokens 0", max_tokens=5)
    assert code is grpc.StatusCode.OK
    per_call = first.usage.total_tokens  # type: ignore[attr-defined]
    served = 1
    for i in range(1, 60):
        code, _, _ = call(cluster.front, TOKEN_KEY, f"tokens {i}", max_tokens=5)
        if code is not grpc.StatusCode.OK:
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
            break
        served += 1
    assert abs(served - TPM / per_call) <= max(2, 0.05 * TPM / per_call), (served, per_call)


def test_an_answer_cached_by_one_replica_is_served_by_another(cluster: Cluster) -> None:
    first_replica, second_replica = cluster.replicas[0], cluster.replicas[1]
    before = upstream_calls(cluster)
    code, _, first = call(first_replica, OPEN_KEY, "cache me across replicas", temperature=0)
    assert code is grpc.StatusCode.OK and not first.cached  # type: ignore[attr-defined]
    code, trailers, second = call(
        second_replica, TOKEN_KEY, "cache me across replicas", temperature=0
    )
    assert code is grpc.StatusCode.OK
    assert second.cached  # type: ignore[attr-defined]
    assert trailers["x-ai-deployment"] == "cache"
    assert upstream_calls(cluster) == before + 1


async def test_a_leased_request_limit_is_exact_to_a_percent_across_replicas(
    cluster: Cluster,
) -> None:
    """Three replicas spending leases (the default), a caller well over the limit: the
    calls served are the burst and the refill of the run, never more, at most 1 % fewer."""
    metadata = (("authorization", f"Bearer {PRECISE_KEY}"),)
    served = 0
    async with grpc.aio.insecure_channel(cluster.front) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)

        async def ask(i: int) -> None:
            nonlocal served
            request = ChatCompletionRequest(
                model="sim-gpt", messages=[Message(role="user", content=f"precise {i}")]
            )
            try:
                await stub.ChatCompletion(request, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as error:
                assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error
                return
            served += 1

        shared = SharedRedis(SharedStateSettings(backend="redis", redis_url=cluster.redis_url))
        try:
            opened = await open_bucket(shared, "requests:precise", PRECISE)
        finally:
            await shared.aclose()
        last_call = await paced(200, 5, ask)  # 1,000 calls for a limit of about 800
    assert_within_a_percent(served, PRECISE, opened, last_call)


async def test_a_leased_token_limit_is_exact_to_a_percent_across_replicas(
    cluster: Cluster,
) -> None:
    """The same for a token budget: each call reserves its estimate and is refunded (or
    charged) the difference with what it used, on whichever replica served it."""
    metadata = (("authorization", f"Bearer {PRECISE_TOKENS_KEY}"),)
    used = 0
    async with grpc.aio.insecure_channel(cluster.front) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)

        async def ask(i: int) -> None:
            nonlocal used
            request = ChatCompletionRequest(
                model="sim-gpt",
                messages=[Message(role="user", content=f"precise tokens {i}")],
                max_tokens=5,
            )
            try:
                response = await stub.ChatCompletion(request, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as error:
                assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error
                return
            used += response.usage.total_tokens

        shared = SharedRedis(SharedStateSettings(backend="redis", redis_url=cluster.redis_url))
        try:
            opened = await open_bucket(shared, "tokens:precise-tokens", PRECISE_TOKENS)
        finally:
            await shared.aclose()
        last_call = await paced(200, 5, ask)  # about 10,000 tokens for a limit of 5,500
    # Unusable: what is left under one reservation (~15), the refunds of calls in flight.
    assert_within_a_percent(used, PRECISE_TOKENS, opened, last_call, spare=15 + 5 * 10)
