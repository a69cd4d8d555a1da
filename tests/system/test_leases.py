"""Rate-limit leases: replicas spend small batches taken from Redis, and the limit still holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ai_service.config import SharedStateSettings
from ai_service.limits.buckets import LeasedRateLimiter, RedisRateLimiter
from ai_service.limits.rules import RateRule
from ai_service.limits.shared_state import SharedRedis
from tests.conftest import assert_within_a_percent, free_port, open_bucket, paced
from tests.servers import RedisServer, redis_server

RULE = RateRule(per_minute=100, burst=100)


@pytest.fixture
async def shared(tmp_path: Path) -> AsyncIterator[SharedRedis]:
    server: RedisServer
    with redis_server(free_port(), tmp_path) as server:
        redis = SharedRedis(SharedStateSettings(backend="redis", redis_url=server.url))
        yield redis
        await redis.aclose()


@pytest.fixture
async def patient(tmp_path: Path) -> AsyncIterator[SharedRedis]:
    """A Redis that a loaded machine never times out: a timeout lets calls through unlimited,
    which these measurements must not mistake for the leases' doing."""
    server: RedisServer
    with redis_server(free_port(), tmp_path) as server:
        settings = SharedStateSettings(backend="redis", redis_url=server.url, timeout_ms=5000)
        redis = SharedRedis(settings)
        yield redis
        await redis.aclose()


async def tokens_left(shared: SharedRedis, subject: str) -> float:
    value = await shared.client.hget(shared.key("limit", subject), "tokens")
    assert value is not None
    return float(value)


async def test_without_leases_a_call_past_the_burst_is_refused_with_its_wait(
    patient: SharedRedis,
) -> None:
    limiter = RedisRateLimiter(patient)  # lease_fraction 0: every call asks Redis
    rule = RateRule(per_minute=60, burst=3)  # one token a second
    assert [(await limiter.take("k", 1, rule)).allowed for _ in range(3)] == [True] * 3
    refused = await limiter.take("k", 1, rule)
    assert not refused.allowed
    assert 0 < refused.retry_after <= 1


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


async def wait_tokens_left(shared: SharedRedis, subject: str, least: float) -> float:
    """Wait until `subject`'s bucket in Redis holds at least `least` (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (left := await tokens_left(shared, subject)) < least:
        assert loop.time() < deadline, f"{left} left, never {least}"
        await asyncio.sleep(0.05)
    return left


async def test_an_unspent_lease_goes_back_to_redis(shared: SharedRedis) -> None:
    rule = RateRule(per_minute=1, burst=1000)  # next to no refill: Redis full in hours
    replica = LeasedRateLimiter(RedisRateLimiter(shared), lease_fraction=0.01)  # leases of 10
    assert (await replica.take("requests:k", 1, rule)).allowed
    assert await tokens_left(shared, "requests:k") == pytest.approx(990, abs=0.5)
    # Nobody spends the 9 held: they go back, not lost with the lease.
    assert await wait_tokens_left(shared, "requests:k", 999) == pytest.approx(999, abs=0.5)


async def test_leases_stop_near_empty(shared: SharedRedis) -> None:
    # Near the limit a token held here would refuse a call on another replica.
    replica = LeasedRateLimiter(RedisRateLimiter(shared), lease_fraction=0.1)  # leases of 10
    rule = RateRule(per_minute=1, burst=100)
    assert (await RedisRateLimiter(shared).take("requests:k", 85, rule)).allowed  # 15 left
    assert (await replica.take("requests:k", 1, rule)).allowed
    assert await tokens_left(shared, "requests:k") == pytest.approx(14, abs=0.1)


async def test_a_stopping_replica_gives_its_leases_back(shared: SharedRedis) -> None:
    rule = RateRule(per_minute=1, burst=1000)
    replica = LeasedRateLimiter(RedisRateLimiter(shared), lease_fraction=0.01)
    assert (await replica.take("requests:k", 1, rule)).allowed
    await replica.charge("requests:k", -5, rule)  # a refund joins the lease
    await replica.aclose()
    assert await tokens_left(shared, "requests:k") == pytest.approx(1000, abs=0.5)


# --- precision under load: three replicas, the default lease, a paced caller ---------------

DEFAULT_LEASE = SharedStateSettings().lease_fraction


async def test_requests_across_three_replicas_stay_within_a_percent_of_the_limit(
    patient: SharedRedis,
) -> None:
    # A lease of 3 lasts 30 ms of refill at 100/s; each replica sees a call every 15 ms.
    rule = RateRule(per_minute=6000, burst=300)
    replicas = [LeasedRateLimiter(RedisRateLimiter(patient), DEFAULT_LEASE) for _ in range(3)]
    admitted = 0

    async def call(i: int) -> None:
        nonlocal admitted
        decision = await replicas[i % 3].take("requests:k", 1, rule)
        admitted += decision.allowed  # after the await: calls run at once

    opened = await open_bucket(patient, "requests:k", rule)
    last_call = await paced(200, 5, call)  # 1,000 calls for a limit of about 800
    assert_within_a_percent(admitted, rule, opened, last_call)


async def test_tokens_across_three_replicas_stay_within_a_percent_of_the_limit(
    patient: SharedRedis,
) -> None:
    # Each call reserves 30 tokens and uses 12: the settlement refunds 18.
    rule = RateRule(per_minute=60_000, burst=3000)
    replicas = [LeasedRateLimiter(RedisRateLimiter(patient), DEFAULT_LEASE) for _ in range(3)]
    used = 0

    async def call(i: int) -> None:
        nonlocal used
        replica = replicas[i % 3]
        if (await replica.take("tokens:k", 30, rule)).allowed:
            await asyncio.sleep(0.02)  # the upstream answers
            await replica.charge("tokens:k", 12 - 30, rule)
            used += 12

    opened = await open_bucket(patient, "tokens:k", rule)
    last_call = await paced(300, 5, call)  # 18,000 tokens if all passed, for about 8,000
    # Unusable: what is left under one reservation, the refunds of the calls in flight.
    assert_within_a_percent(used, rule, opened, last_call, spare=30 + 18 * 3)
