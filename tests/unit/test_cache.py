"""The response cache: which calls it keys and how, the in-process store, and single-flight.

The Redis store is tested against a real Redis in tests/system/test_shared_state.py; here,
only that a Redis which is down costs a miss and never an error.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from ai_service.config import CacheSettings, SharedStateSettings
from ai_service.limits.shared_state import SharedRedis
from ai_service.pipeline.cache import MemoryCache, RedisCache, SingleFlight, cache_key, ttl_for
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, Message, RequestOptions
from tests.clock import ManualClock, in_virtual_time

DETERMINISTIC = CacheSettings(enabled=True)
ALWAYS = CacheSettings(enabled=True, when="always")


def request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[Message(role="user", content="hi")], **fields)


# -- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "cached"),
    [
        ({"temperature": 0.0}, True),
        ({"seed": 7}, True),
        ({"seed": 0}, True),  # set, even to 0
        ({"temperature": 0.5, "seed": 7}, True),
        ({}, False),  # the provider's default temperature is not 0
        ({"temperature": 0.5}, False),
        ({"temperature": 0.0, "options": RequestOptions(bypass_cache=True)}, False),
    ],
)
def test_by_default_only_deterministic_calls_are_cached(
    fields: dict[str, object], cached: bool
) -> None:
    assert (cache_key(request(**fields), DETERMINISTIC, "r") is not None) is cached


def test_always_caches_every_call_but_one_that_bypasses_the_cache() -> None:
    assert cache_key(request(temperature=0.7), ALWAYS, "r") is not None
    assert cache_key(request(), ALWAYS, "r") is not None
    bypass = request(options=RequestOptions(bypass_cache=True))
    assert cache_key(bypass, ALWAYS, "r") is None


def test_a_key_is_the_model_the_route_and_the_hash_of_what_shapes_the_answer() -> None:
    asked = request(temperature=0.0)
    key = cache_key(asked, DETERMINISTIC, "fp")
    canonical = ChatCompletionRequest()
    canonical.CopyFrom(asked)
    digest = hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()
    assert key == f"m:fp:{digest}"


def test_who_asks_and_how_do_not_split_the_cache() -> None:
    plain = cache_key(request(temperature=0.0), DETERMINISTIC, "r")
    dressed = request(
        temperature=0.0,
        user="someone",
        metadata={"trace": "x"},
        options=RequestOptions(cache_ttl_seconds=5),
    )
    assert cache_key(dressed, DETERMINISTIC, "r") == plain
    assert dressed.user == "someone"  # the caller's request is left as it was


def test_what_shapes_the_answer_splits_the_cache() -> None:
    plain = cache_key(request(temperature=0.0), DETERMINISTIC, "r")
    others = [
        cache_key(request(temperature=0.0, max_tokens=5), DETERMINISTIC, "r"),
        cache_key(request(temperature=0.0, stop=["x"]), DETERMINISTIC, "r"),
        cache_key(request(temperature=0.0), DETERMINISTIC, "another route"),
        cache_key(
            ChatCompletionRequest(model="m", temperature=0.0, messages=[Message(content="yo")]),
            DETERMINISTIC,
            "r",
        ),
    ]
    assert plain not in others and len(set(others)) == len(others)


def test_a_call_may_set_its_own_ttl() -> None:
    settings = CacheSettings(ttl_seconds=300)
    assert ttl_for(request(), settings) == 300.0
    assert ttl_for(request(options=RequestOptions(cache_ttl_seconds=5)), settings) == 5.0
    assert isinstance(
        ttl_for(request(options=RequestOptions(cache_ttl_seconds=5)), settings), float
    )


# -- the in-process store ------------------------------------------------------------------


async def test_an_entry_lives_until_its_ttl_has_passed() -> None:
    clock = ManualClock()
    cache = MemoryCache(10, clock)
    assert await cache.get("k") is None
    await cache.put("k", b"v", 5)
    clock.now += 5  # exactly the ttl: still there
    assert await cache.get("k") == b"v"
    clock.now += 0.001
    assert await cache.get("k") is None
    clock.now -= 1  # gone for good, not merely hidden
    assert await cache.get("k") is None


async def test_writing_an_entry_again_renews_it() -> None:
    clock = ManualClock()
    cache = MemoryCache(10, clock)
    await cache.put("k", b"old", 5)
    clock.now += 4
    await cache.put("k", b"new", 5)
    clock.now += 4
    assert await cache.get("k") == b"new"


async def test_the_least_recently_used_entry_goes_first() -> None:
    cache = MemoryCache(2, ManualClock())
    await cache.put("a", b"1", 60)
    await cache.put("b", b"2", 60)
    assert await cache.get("a") == b"1"  # a is now the more recent
    await cache.put("c", b"3", 60)
    assert await cache.get("b") is None
    assert await cache.get("a") == b"1" and await cache.get("c") == b"3"
    await cache.put("a", b"1", 60)  # rewritten: the most recent again
    await cache.put("d", b"4", 60)
    assert await cache.get("c") is None and await cache.get("a") == b"1"


async def test_a_cache_of_one_keeps_the_last() -> None:
    cache = MemoryCache(1, ManualClock())
    await cache.put("a", b"1", 60)
    await cache.put("b", b"2", 60)
    assert (await cache.get("a"), await cache.get("b")) == (None, b"2")


# -- single flight -------------------------------------------------------------------------


def test_identical_work_at_once_runs_once_and_everyone_gets_its_result() -> None:
    async def main(_: ManualClock) -> None:
        flights: SingleFlight[str] = SingleFlight()
        runs: list[str] = []

        async def work() -> str:
            runs.append("ran")
            await asyncio.sleep(1)
            return "answer"

        results = await asyncio.gather(*(flights.run("k", work) for _ in range(3)))
        assert results == [("answer", False), ("answer", True), ("answer", True)]
        assert runs == ["ran"] and len(flights) == 0
        assert await flights.run("k", work) == ("answer", False)  # later: afresh
        assert runs == ["ran", "ran"]
        assert await flights.run("other", work) == ("answer", False)

    in_virtual_time(main)


def test_a_failure_reaches_everyone_waiting() -> None:
    async def main(_: ManualClock) -> None:
        flights: SingleFlight[str] = SingleFlight()

        async def work() -> str:
            await asyncio.sleep(1)
            raise ValueError("upstream")

        results = await asyncio.gather(
            flights.run("k", work), flights.run("k", work), return_exceptions=True
        )
        assert all(isinstance(result, ValueError) for result in results)
        assert len(flights) == 0

    in_virtual_time(main)


def test_the_work_goes_on_while_anyone_waits_and_stops_when_none_does() -> None:
    async def main(_: ManualClock) -> None:
        flights: SingleFlight[str] = SingleFlight()
        stopped: list[str] = []

        async def work() -> str:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                stopped.append("cancelled")
                raise
            return "answer"

        first = asyncio.ensure_future(flights.run("k", work))
        second = asyncio.ensure_future(flights.run("k", work))
        await asyncio.sleep(1)
        first.cancel()  # the one that started it leaves: the other still waits
        await asyncio.gather(first, return_exceptions=True)
        await asyncio.sleep(1)
        assert stopped == [] and len(flights) == 1
        second.cancel()  # the last one leaves: the work stops
        await asyncio.gather(second, return_exceptions=True)
        assert len(flights) == 0  # forgotten at once
        await flights.finished()
        assert stopped == ["cancelled"]

    in_virtual_time(main)


def test_a_caller_arriving_as_the_work_is_cancelled_starts_afresh() -> None:
    async def main(_: ManualClock) -> None:
        flights: SingleFlight[str] = SingleFlight()
        runs = 0

        async def work() -> str:
            nonlocal runs
            runs += 1
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                await asyncio.sleep(1)  # slow to unwind
                raise
            return f"run {runs}"

        first = asyncio.ensure_future(flights.run("k", work))
        await asyncio.sleep(1)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        assert await flights.run("k", work) == ("run 2", False)
        await flights.finished()

    in_virtual_time(main)


def test_finished_waits_for_every_flight_and_returns_at_once_without_any() -> None:
    async def main(_: ManualClock) -> None:
        flights: SingleFlight[str] = SingleFlight()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await flights.finished()
        assert loop.time() == started

        async def work() -> str:
            await asyncio.sleep(3)
            return "x"

        task = asyncio.ensure_future(flights.run("k", work))
        await asyncio.sleep(0)
        await flights.finished()
        assert loop.time() - started == 3 and task.done()

    in_virtual_time(main)


def test_with_redis_down_a_lookup_is_a_miss_and_a_store_is_skipped(tmp_path: Path) -> None:
    async def test() -> None:
        # A Unix socket nobody listens on: every call fails as it does with Redis down.
        settings = SharedStateSettings(redis_url=f"unix://{tmp_path / 'absent.sock'}")
        cache = RedisCache(SharedRedis(settings))
        await cache.put("k", b"answer", 60)
        assert await cache.get("k") is None

    asyncio.run(test())
