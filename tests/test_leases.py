"""Rate-limit leases: replicas spend small batches taken from Redis, and the limit still holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.config import SharedStateSettings
from server.limiter import LeasedRateLimiter, RateRule, RedisRateLimiter
from server.shared_state import SharedRedis
from tests.conftest import free_port
from tests.servers import RedisServer, redis_server

RULE = RateRule(per_minute=100, burst=100)


@pytest.fixture
async def shared(tmp_path: Path) -> AsyncIterator[SharedRedis]:
    server: RedisServer
    with redis_server(free_port(), tmp_path) as server:
        redis = SharedRedis(SharedStateSettings(backend="redis", redis_url=server.url))
        yield redis
        await redis.aclose()


async def tokens_left(shared: SharedRedis, subject: str) -> float:
    value = await shared.client.hget(shared.key("limit", subject), "tokens")
    return float(value)


async def test_a_lease_is_taken_from_redis_once_and_spent_locally(shared: SharedRedis) -> None:
    replica = LeasedRateLimiter(RedisRateLimiter(shared), lease_fraction=0.1)
    assert (await replica.take("requests:k", 1, RULE)).allowed
    assert await tokens_left(shared, "requests:k") == pytest.approx(90, abs=0.5)
    for _ in range(9):  # the rest of the lease: no Redis call moves the bucket
        assert (await replica.take("requests:k", 1, RULE)).allowed
    assert await tokens_left(shared, "requests:k") == pytest.approx(90, abs=0.5)


async def test_the_limit_holds_across_replicas_with_leases(shared: SharedRedis) -> None:
    replicas = [LeasedRateLimiter(RedisRateLimiter(shared), lease_fraction=0.1) for _ in range(3)]
    allowed = 0
    for i in range(150):
        allowed += (await replicas[i % 3].take("requests:k", 1, RULE)).allowed
    # Never above the limit (plus the refill of the run); leases held unspent elsewhere
    # may refuse a few early, at most one lease per replica.
    assert 100 - 3 * 10 <= allowed <= 101


async def test_refunds_stay_local_up_to_a_lease_and_charges_spend_it_first(
    shared: SharedRedis,
) -> None:
    replica = LeasedRateLimiter(RedisRateLimiter(shared), lease_fraction=0.1)
    assert (await replica.take("tokens:k", 30, RULE)).allowed  # bigger than a lease
    after_take = await tokens_left(shared, "tokens:k")
    await replica.charge("tokens:k", -25, RULE)  # settle: 25 reserved too many
    # Ten stay here as a lease, fifteen go back to everyone.
    assert await tokens_left(shared, "tokens:k") == pytest.approx(after_take + 15, abs=0.5)
    await replica.charge("tokens:k", 5, RULE)  # spent from the local lease
    assert await tokens_left(shared, "tokens:k") == pytest.approx(after_take + 15, abs=0.5)
