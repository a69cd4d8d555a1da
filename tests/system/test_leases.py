"""Rate-limit leases: replicas spend small batches taken from Redis, and the limit still holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ai_service.config import SharedStateSettings
from ai_service.limits import buckets as limiter
from ai_service.limits.buckets import ALLOWED, Decision, LeasedRateLimiter, RedisRateLimiter
from ai_service.limits.rules import RateRule
from ai_service.limits.shared_state import SharedRedis
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


async def test_calls_taken_at_once_never_count_the_same_held_tokens(shared: SharedRedis) -> None:
    rule = RateRule(per_minute=1, burst=1000)  # next to no refill during the test
    replica = LeasedRateLimiter(RedisRateLimiter(shared), lease_fraction=0.01)  # leases of 10
    assert (await replica.take("tokens:k", 5, rule)).allowed  # holds 5 of its lease
    assert (await RedisRateLimiter(shared).take("tokens:k", 984, rule)).allowed  # 6 left
    # 5 held + 6 in Redis = 11: two calls of 8 at once cannot both be admitted.
    first, second = await asyncio.gather(
        replica.take("tokens:k", 8, rule), replica.take("tokens:k", 8, rule)
    )
    assert [first.allowed, second.allowed].count(True) == 1


async def test_a_lease_lapses_once_redis_would_have_refilled_it(shared: SharedRedis) -> None:
    # Held through a refill, a lease would add to a full bucket: the burst is all that
    # may pass at once, whatever the replicas hold.
    rule = RateRule(per_minute=6000, burst=100)  # full again within a second
    replicas = [LeasedRateLimiter(RedisRateLimiter(shared), lease_fraction=0.1) for _ in range(3)]
    for replica in replicas:  # each holds 9 unspent
        assert (await replica.take("requests:k", 1, rule)).allowed
    await asyncio.sleep(1.2)
    allowed = 0
    started = time.monotonic()
    for i in range(200):
        allowed += (await replicas[i % 3].take("requests:k", 1, rule)).allowed
    # The burst, and what refills (100/s) while the 200 run; 27 more if leases held.
    refilled = 100 * (time.monotonic() - started)
    assert allowed <= 100 + refilled + 1, (allowed, refilled)


class _Granting:
    """A shared limiter that grants every take, and records when and how much."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.takes: list[tuple[float, float]] = []

    async def take(self, subject: str, amount: float, rule: RateRule) -> Decision:
        self.takes.append((self.clock[0], amount))
        return ALLOWED

    async def charge(self, subject: str, amount: float, rule: RateRule) -> None:
        pass


async def test_spending_from_a_lease_never_extends_its_life(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    monkeypatch.setattr(limiter.time, "monotonic", lambda: clock[0])
    shared = _Granting(clock)
    replica = LeasedRateLimiter(shared, lease_fraction=0.01)
    rule = RateRule(per_minute=60, burst=1000)  # 1 token/s, leases of 10: each lasts 10 s
    for second in (0, 9, 17, 24, 30, 35, 39):  # a call every few seconds
        clock[0] = second
        assert (await replica.take("k", 1, rule)).allowed
    assert [at for at, _ in shared.takes] == [0, 17, 30]
