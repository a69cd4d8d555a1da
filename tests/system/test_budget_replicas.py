"""One budget across three gateway processes behind nginx (deploy/nginx.conf), sharing
one redis-server: calls spread over the replicas spend against it concurrently, and the
spend stops within one reservation of the budget, never above it; the ledger's spend is
the sum of the costs the answers showed, to the nano-unit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ai_service.config import PriceSettings
from ai_service.limits.prices import NANOS, Rate
from ai_service.limits.token_quota import estimate_prompt_tokens
from ai_service_client import AsyncAIClient, ChatCompletionRequest, Message, RateLimitError
from ai_service_protos.ai_service_pb2 import GetUsageRequest, GetUsageResponse
from tests.conftest import config_tree, free_port, write_config
from tests.processes import Process, gateway_argv, spawn, start_simulator, wait_serving
from tests.servers import nginx_in_front, redis_server

SPENDER_KEY = "spender-key-0123456789"
#: 0.001 a token: a call of `MAX_TOKENS` answer tokens costs a few cents.
PRICE = PriceSettings(input=1000, output=1000)
BUDGET = 2.0
MAX_TOKENS = 20
REQUEST = ChatCompletionRequest(
    model="sim-gpt",
    messages=[Message(role="user", content=f"/tokens {MAX_TOKENS}")],
    max_tokens=MAX_TOKENS,
)


@dataclass
class Cluster:
    front: str
    replicas: list[str]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("cost-cluster")
    processes: list[Process] = []
    try:
        simulator, simulator_url = start_simulator(directory)
        processes.append(simulator)
        with redis_server(free_port(), directory) as redis:
            tree = config_tree(simulator_url)
            tree["auth"]["keys"].append(
                {
                    "name": "spender",
                    "key": SPENDER_KEY,
                    "team": "search",
                    "budget": {"amount": BUDGET, "period": "day"},
                }
            )
            tree["auth"]["teams"] = [{"name": "search", "budget": {"amount": 100}}]
            tree["cost"] = {"prices": {"sim-gpt": PRICE.model_dump(exclude_none=True)}}
            # A loaded machine may stall a replica past the 100 ms default; a Redis that
            # does not answer refuses budgeted calls rather than letting them through.
            tree["shared_state"] = {
                "backend": "redis",
                "redis_url": redis.url,
                "timeout_ms": 2000,
                "on_failure": "closed",
            }
            config = write_config(directory / "config.yaml", tree)
            replicas = []
            for i in range(3):
                address = f"127.0.0.1:{free_port()}"
                gateway = spawn(
                    gateway_argv("--config", str(config), "--listen", address, "--workers", "1"),
                    directory,
                    f"gateway-{i}",
                )
                processes.append(gateway)
                wait_serving(address, gateway)
                replicas.append(address)
            with nginx_in_front(free_port(), replicas, directory / "nginx") as front:
                yield Cluster(front, replicas)
    finally:
        for process in processes:
            process.kill()


async def test_three_replicas_spending_one_budget_stop_within_a_reservation_never_above(
    cluster: Cluster,
) -> None:
    rate = Rate.of(PRICE)
    reservation = rate.most(estimate_prompt_tokens(REQUEST), MAX_TOKENS)
    costs: list[float] = []

    async def spend(client: AsyncAIClient) -> None:
        while True:  # each of the callers goes on until the budget refuses it
            try:
                response = await client.chat(REQUEST)
            except RateLimitError as error:
                assert error.reason == "BUDGET_EXCEEDED"
                assert error.quota_violations == [("key:spender", "2 USD per day")]
                return
            costs.append(response.cost.amount)

    clients = [AsyncAIClient(cluster.front, SPENDER_KEY, timeout=30) for _ in range(12)]
    try:
        await asyncio.gather(*(spend(client) for client in clients))
        # Nothing in flight now: one more call at a time, until one is refused.
        while True:
            try:
                costs.append((await clients[0].chat(REQUEST)).cost.amount)
            except RateLimitError:
                break
        for replica in cluster.replicas:  # each replica reports the same, from Redis
            async with AsyncAIClient(replica, SPENDER_KEY, timeout=30) as direct:
                budget = (await direct.get_usage(GetUsageRequest())).budget
                assert budget.reserved == 0
                assert budget.spent == pytest.approx(sum(costs), abs=1e-9)
        report = await _settled(clients[0], len(costs))
    finally:
        for client in clients:
            await client.close()
    spent = round(budget.spent * NANOS)
    assert spent <= BUDGET * NANOS  # never above
    assert spent > BUDGET * NANOS - reservation  # within one reservation
    assert report.total.calls == len(costs)
    assert report.total.cost == pytest.approx(sum(costs), abs=1e-9)


async def _settled(client: AsyncAIClient, calls: int) -> GetUsageResponse:
    """GetUsage once the history holds `calls` calls (replicas write it once a second)."""
    for _ in range(400):
        report = await client.get_usage(GetUsageRequest())
        if report.total.calls >= calls:
            return report
        await asyncio.sleep(0.05)
    raise AssertionError(f"the history never held {calls} calls: {report}")
