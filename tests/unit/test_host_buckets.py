"""Token buckets in a file every worker of a host maps (limits/host_buckets.py).

Two limiters on one file stand for two workers: what one spends, the other sees.
Processes hammering one file at once are in tests/system/test_workers.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ai_service.limits.host_buckets import HostRateLimiter
from ai_service.limits.rules import RateRule

SLOW = RateRule(per_minute=1, burst=5)  # next to no refill during a test


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[tuple[HostRateLimiter, HostRateLimiter]]:
    path = str(tmp_path / "buckets")
    first, second = HostRateLimiter(path), HostRateLimiter(path)
    yield first, second
    await first.aclose()
    await second.aclose()


async def test_two_workers_spend_from_one_bucket(
    workers: tuple[HostRateLimiter, HostRateLimiter],
) -> None:
    allowed = [(await workers[i % 2].take("requests:k", 1, SLOW)).allowed for i in range(10)]
    assert allowed == [True] * 5 + [False] * 5
    refused = await workers[0].take("requests:k", 1, SLOW)
    assert refused.retry_after == pytest.approx(60, rel=0.01)  # one token a minute
    assert (await workers[1].take("requests:other", 1, SLOW)).allowed  # its own bucket


async def test_a_refund_by_one_worker_is_spent_by_another(
    workers: tuple[HostRateLimiter, HostRateLimiter],
) -> None:
    first, second = workers
    assert (await first.take("tokens:k", 5, SLOW)).allowed
    assert not (await second.take("tokens:k", 2, SLOW)).allowed
    await first.charge("tokens:k", -2, SLOW)
    assert (await second.take("tokens:k", 2, SLOW)).allowed
    await second.charge("tokens:k", -100, SLOW)  # never above the burst
    assert (await first.take("tokens:k", 5, SLOW)).allowed
    assert not (await first.take("tokens:k", 1, SLOW)).allowed


async def test_a_crowded_table_reuses_only_buckets_full_again(tmp_path: Path) -> None:
    # Four slots: the fifth subject takes the slot of one whose bucket is full again
    # (nothing lost) and never one still spent.
    limiter = HostRateLimiter(str(tmp_path / "buckets"), slots=4)
    fast = RateRule(per_minute=6_000_000, burst=1)  # full again within microseconds
    try:
        for name in ("a", "b", "c"):
            assert (await limiter.take(name, 5, SLOW)).allowed  # spent: empty for minutes
        assert (await limiter.take("d", 1, fast)).allowed
        assert (await limiter.take("e", 5, SLOW)).allowed  # reuses d's slot
        for name in ("a", "b", "c", "e"):
            assert not (await limiter.take(name, 1, SLOW)).allowed, name
    finally:
        await limiter.aclose()
