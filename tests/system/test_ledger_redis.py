"""The spend ledger in a real redis-server, as several processes share it: one budget to
the nano-unit however many ledgers reserve at once, a hold left by a process that died
given back once it lapses, the history written in batches, and what happens when Redis
does not answer (each ledger here stands for a replica)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ai_service.config import SharedStateSettings
from ai_service.limits.ledger import FIELDS, BudgetRule, Scope, Spend, periods_at
from ai_service.limits.redis_ledger import RedisLedger
from ai_service.limits.shared_state import SharedRedis, SharedStateUnavailable
from tests.conftest import free_port
from tests.servers import RedisServer, redis_server


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    with redis_server(free_port(), tmp_path) as server:
        yield server


def connect(redis_url: str, **overrides: object) -> SharedRedis:
    settings = {"backend": "redis", "redis_url": redis_url, "timeout_ms": 2000, **overrides}
    return SharedRedis(SharedStateSettings.model_validate(settings))


def spend(cost: int, model: str = "m") -> Spend:
    counts = dict.fromkeys(FIELDS, 0)
    counts.update(calls=1, prompt_tokens=3, completion_tokens=2, cost=cost)
    return Spend(model, tuple(counts[name] for name in FIELDS))


KEY = Scope("key:alice", BudgetRule("day", hard=1_000, soft=None))


async def test_replicas_reserving_at_once_never_pass_the_budget(redis: RedisServer) -> None:
    replicas = [RedisLedger(connect(redis.url), 35) for _ in range(3)]
    admitted = 0

    async def one(ledger: RedisLedger) -> None:
        nonlocal admitted
        admission = await ledger.reserve([KEY], 7, 60)
        if admission.hold is not None:
            admitted += 1
            await ledger.settle(admission.hold, [KEY.name], spend(7))

    await asyncio.gather(*(one(replicas[i % 3]) for i in range(300)))
    balance = await replicas[0].balance(KEY.name, periods_at(time.time()).day)
    assert admitted == 1000 // 7 and balance.spent == admitted * 7 and balance.reserved == 0


async def test_a_hold_left_by_a_replica_that_died_is_given_back_once_it_lapses(
    redis: RedisServer,
) -> None:
    died = RedisLedger(connect(redis.url), 35, hold_grace=1)
    alive = RedisLedger(connect(redis.url), 35, hold_grace=1)
    held = await died.reserve([KEY], 900, 0)  # never settled: its process is gone
    assert held.hold is not None
    assert (await alive.reserve([KEY], 200, 0)).refused is not None
    for _ in range(400):  # wait for the lapse: the next reservation takes the hold back
        admission = await alive.reserve([KEY], 200, 0)
        if admission.hold is not None:
            break
        await asyncio.sleep(0.01)
    assert admission.hold is not None
    # The dead replica's late settlement changes no hold twice, and still counts its cost.
    await died.settle(held.hold, [KEY.name], spend(100))
    balance = await alive.balance(KEY.name, periods_at(time.time()).day)
    assert (balance.spent, balance.reserved) == (100, 200)


async def test_the_history_is_written_in_batches_and_read_back_by_any_replica(
    redis: RedisServer,
) -> None:
    writer, reader = RedisLedger(connect(redis.url), 35), RedisLedger(connect(redis.url), 35)
    for cost in (5, 6):
        await writer.settle(None, ["key:bob", "team:t"], spend(cost, "m1"))
    hour = int(time.time() // 3600)
    assert await reader.tallies("key:bob", hour, hour + 1) == []  # not written yet
    assert [
        t.counts[FIELDS.index("cost")] for t in await writer.tallies("key:bob", hour, hour + 1)
    ] == [11]
    await writer.flush()
    (tally,) = await reader.tallies("team:t", hour, hour + 1)
    assert (tally.model, tally.counts[0], tally.counts[FIELDS.index("cost")]) == ("m1", 2, 11)
    day = periods_at(time.time()).day
    assert (await reader.balance("key:bob", day)).spent == 11


@pytest.mark.parametrize("on_failure", ["open", "closed"])
async def test_a_redis_that_does_not_answer_follows_the_failure_policy(
    redis: RedisServer, on_failure: str
) -> None:
    ledger = RedisLedger(connect(redis.url, timeout_ms=200, on_failure=on_failure), 35)
    redis.stop()
    if on_failure == "closed":
        with pytest.raises(SharedStateUnavailable):
            await ledger.reserve([KEY], 10, 60)
        return
    admission = await ledger.reserve([KEY], 10, 60)
    assert admission.hold is None and admission.refused is None  # served, unbudgeted
    await ledger.settle(None, [KEY.name], spend(10))  # kept for the next batch
    await ledger.flush()  # fails: still kept
    redis.start()
    await ledger.flush()
    reader = RedisLedger(connect(redis.url), 35)
    assert (await reader.balance(KEY.name, periods_at(time.time()).day)).spent == 10
