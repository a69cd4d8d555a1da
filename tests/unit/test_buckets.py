"""Token buckets: the in-process limiter on a test's clock, and leases spent locally.

The leases' Redis side is a stand-in here (`SharedBucket`: the bucket script's arithmetic on
the test's clock, counting round trips); tests/system/test_leases.py runs them on a real
Redis, which is also where `RedisRateLimiter` itself is tested.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Literal

import pytest

from ai_service.config import SharedStateSettings
from ai_service.limits.buckets import (
    ALLOWED,
    LEASE_FLOOR,
    LEASE_HOLD_SECONDS,
    Grant,
    InMemoryRateLimiter,
    LeasedRateLimiter,
    RedisRateLimiter,
)
from ai_service.limits.rules import RateRule
from ai_service.limits.shared_state import SharedRedis, SharedStateUnavailable
from tests.clock import ManualClock, in_virtual_time

RULE = RateRule(per_minute=60, burst=5)  # one token a second, five at most


async def spend_all(limiter: InMemoryRateLimiter, subject: str = "k", amount: float = 1) -> int:
    taken = 0
    while (await limiter.take(subject, amount, RULE)).allowed:
        taken += 1
    return taken


# -- in process ---------------------------------------------------------------------------


async def test_a_new_bucket_is_full_and_refills_at_its_rate() -> None:
    clock = ManualClock()
    limiter = InMemoryRateLimiter(clock)
    assert await spend_all(limiter) == 5
    clock.now += 2  # two seconds: two tokens back, and no more however often it is asked
    assert await spend_all(limiter) == 2
    clock.now += 0.5
    assert await spend_all(limiter) == 0
    clock.now += 0.5
    assert await spend_all(limiter) == 1


async def test_a_refusal_says_how_long_until_the_amount_is_there() -> None:
    clock = ManualClock()
    limiter = InMemoryRateLimiter(clock)
    assert (await limiter.take("k", 4.5, RULE)).allowed
    refused = await limiter.take("k", 2, RULE)  # 0.5 left: 1.5 more needed at 1 a second
    assert not refused.allowed and refused.retry_after == pytest.approx(1.5)
    clock.now += 1.5
    allowed = await limiter.take("k", 2, RULE)
    assert allowed.allowed and allowed.retry_after == 0


async def test_exactly_what_is_left_may_be_taken() -> None:
    limiter = InMemoryRateLimiter(ManualClock())
    assert (await limiter.take("k", 5, RULE)).allowed
    assert not (await limiter.take("k", 0.25, RULE)).allowed


@pytest.mark.parametrize("origin", [0.25, 1000.0])
async def test_the_refill_is_the_time_passed_times_the_rate(origin: float) -> None:
    # Two tokens a second, on a clock that may start anywhere (near 0, too).
    clock = ManualClock(origin)
    limiter = InMemoryRateLimiter(clock)
    rule = RateRule(per_minute=120, burst=10)
    assert (await limiter.take("k", 10, rule)).allowed
    clock.now += 2
    assert (await limiter.take("k", 4, rule)).allowed
    assert not (await limiter.take("k", 0.5, rule)).allowed
    clock.now += 0.25
    assert (await limiter.take("k", 0.5, rule)).allowed


def test_the_shared_answer_allowed_cannot_be_changed() -> None:
    # One Decision answers every allowed call: changing it would change them all.
    with pytest.raises(AttributeError):
        ALLOWED.allowed = False  # type: ignore[misc]


async def test_a_long_idle_bucket_holds_no_more_than_its_burst() -> None:
    clock = ManualClock()
    limiter = InMemoryRateLimiter(clock)
    clock.now += 3600
    assert await spend_all(limiter) == 5


async def test_subjects_have_buckets_of_their_own() -> None:
    limiter = InMemoryRateLimiter(ManualClock())
    assert await spend_all(limiter, "a") == 5
    assert await spend_all(limiter, "b") == 5


async def test_a_charge_spends_past_empty_and_a_refund_stops_at_the_burst() -> None:
    clock = ManualClock()
    limiter = InMemoryRateLimiter(clock)
    await limiter.charge("k", 7, RULE)  # a new bucket starts full: 5 - 7 = -2
    refused = await limiter.take("k", 1, RULE)
    assert refused.retry_after == pytest.approx(3.0)
    await limiter.charge("k", -4, RULE)  # refunded: 2
    assert await spend_all(limiter) == 2
    await limiter.charge("k", -100, RULE)  # a refund never lifts it above its burst
    assert await spend_all(limiter) == 5
    clock.now += 10
    await limiter.charge("k", 1, RULE)  # the refill counts before the charge: 5 - 1
    assert await spend_all(limiter) == 4
    await limiter.aclose()


# -- leases -------------------------------------------------------------------------------

LEASED = RateRule(per_minute=60, burst=100)  # one token a second, leases of 10
FRACTION = 0.1


class SharedBucket:
    """What `RedisRateLimiter` answers, as its script computes it, on the test's clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.tokens: dict[str, float] = {}
        self.updated: dict[str, float] = {}
        self.calls: list[tuple[object, ...]] = []
        #: Seconds each round trip takes.
        self.latency = 0.0
        #: What the next lease raises instead of answering.
        self.failure: BaseException | None = None
        #: Whether Redis is down and fails open (it then grants `least` and says no more).
        self.fail_open = False
        #: What the next charges raise instead of answering.
        self.charge_failure: BaseException | None = None

    def _level(self, subject: str, rule: RateRule) -> float:
        now = self.clock()
        last = self.updated.get(subject, now)
        tokens = self.tokens.get(subject, float(rule.burst)) + max(0.0, now - last) * (
            rule.per_second
        )
        self.updated[subject] = now
        return min(float(rule.burst), tokens)

    async def lease(
        self, subject: str, least: float, most: float, rule: RateRule, floor: float = 0.0
    ) -> Grant:
        self.calls.append(("lease", least, most, floor))
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.failure is not None:
            raise self.failure
        if self.fail_open:
            return Grant(least)
        tokens = self._level(subject, rule)
        taken, wait = 0.0, 0.0
        if tokens - most >= floor:
            taken = most
        elif tokens >= least:
            taken = least
        else:
            wait = (least - tokens) / rule.per_second
        self.tokens[subject] = tokens - taken
        return Grant(taken, wait, (rule.burst - self.tokens[subject]) / rule.per_second)

    async def charge(self, subject: str, amount: float, rule: RateRule) -> None:
        self.calls.append(("charge", amount))
        if self.charge_failure is not None:
            raise self.charge_failure
        self.tokens[subject] = min(float(rule.burst), self._level(subject, rule) - amount)

    def left(self, subject: str = "s") -> float:
        return self.tokens.get(subject, 0.0)


def leased(
    clock: ManualClock, fraction: float = FRACTION
) -> tuple[LeasedRateLimiter, SharedBucket]:
    shared = SharedBucket(clock)
    return LeasedRateLimiter(shared, fraction), shared  # type: ignore[arg-type]


async def take(limiter: LeasedRateLimiter, amount: float = 1, rule: RateRule = LEASED) -> bool:
    return (await limiter.take("s", amount, rule)).allowed


async def settle() -> None:
    """Let the tasks that give leases back run."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_lease_is_taken_once_and_spent_locally() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert await take(limiter)
        # One round trip for the call's token and the lease's ten, while 10 % stays above.
        assert shared.calls == [("lease", 1, 10, 100 * LEASE_FLOOR)]
        assert shared.left() == 90
        for _ in range(9):
            assert await take(limiter)
        assert len(shared.calls) == 1
        assert await take(limiter)  # the lease is spent: the next one
        assert shared.calls[1] == ("lease", 1, 10, 10.0)
        assert shared.left() == 80

    in_virtual_time(main)


@pytest.mark.parametrize(
    ("burst", "fraction", "size"),
    [(100, 0.1, 10), (10, 0.25, 2), (10, 0.29, 2), (100, 0.001, 1), (3, 0.5, 1)],
)
def test_a_lease_is_a_whole_share_of_the_burst_and_never_less_than_one(
    burst: int, fraction: float, size: float
) -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock, fraction)
        assert await take(limiter, 1, RateRule(per_minute=60, burst=burst))
        assert shared.calls[0][2] == size

    in_virtual_time(main)


def test_a_call_larger_than_the_lease_takes_what_is_missing_and_a_lease_on_top() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert await take(limiter, 7)  # lease 10: 3 held
        assert shared.calls[-1] == ("lease", 7, 10, 10.0)
        assert await take(limiter, 5)  # 3 held go toward it: 2 missing, a lease of 10
        assert shared.calls[-1] == ("lease", 2, 10, 10.0)
        assert shared.left() == 80
        for _ in range(8):  # what is left of that lease
            assert await take(limiter)
        assert len(shared.calls) == 2
        assert await take(limiter, 30)  # more than a lease: exactly what is missing
        assert shared.calls[-1] == ("lease", 30, 30, 10.0)
        assert shared.left() == 50

    in_virtual_time(main)


def test_near_empty_only_the_call_s_own_tokens_are_taken() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        shared.tokens["s"], shared.updated["s"] = 19.0, clock.now
        assert await take(limiter)  # 19 - 10 leaves less than 10: only the one token
        assert shared.left() == 18
        assert await take(limiter)  # nothing held: Redis again
        assert len(shared.calls) == 2 and shared.left() == 17

    in_virtual_time(main)


def test_a_refusal_keeps_what_the_lease_held_and_says_when() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert await take(limiter, 8)  # 2 held
        shared.tokens["s"] = 0.5
        refused = await limiter.take("s", 5, LEASED)  # 2 held, 3 missing, 0.5 there
        assert not refused.allowed and refused.retry_after == pytest.approx(2.5)
        calls = len(shared.calls)
        assert await take(limiter, 2)  # the two held are still here
        assert len(shared.calls) == calls

    in_virtual_time(main)


def test_a_failed_lease_keeps_what_the_lease_held() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert await take(limiter, 8)  # 2 held
        shared.failure = SharedStateUnavailable("Redis is down")
        with pytest.raises(SharedStateUnavailable):
            await take(limiter, 5)
        calls = len(shared.calls)
        assert await take(limiter, 2)
        assert len(shared.calls) == calls

    in_virtual_time(main)


def test_nothing_is_held_when_redis_fails_open() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        shared.fail_open = True
        assert await take(limiter)
        assert await take(limiter)
        assert len(shared.calls) == 2

    in_virtual_time(main)


def test_an_unspent_lease_goes_back_after_the_hold_time() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await take(limiter)  # Redis at 90 is full in 10 s: held for the hold time
        await asyncio.sleep(LEASE_HOLD_SECONDS - 0.01)
        assert shared.calls[-1][0] == "lease"
        await asyncio.sleep(0.01)
        await settle()
        assert shared.calls[-1] == ("charge", -9)
        assert loop.time() - started == pytest.approx(1.0)
        assert shared.left() == pytest.approx(100)  # refilled by 1 and given 9: full

    in_virtual_time(main)


def test_a_lease_goes_back_before_redis_would_be_full_again() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        fast = RateRule(per_minute=6000, burst=100)  # full again 0.1 s after a lease of 10
        assert await take(limiter, 1, fast)
        await asyncio.sleep(0.09)
        assert shared.calls[-1][0] == "lease"
        await asyncio.sleep(0.01)
        await settle()
        assert shared.calls[-1] == ("charge", -9)

    in_virtual_time(main)


def test_the_earlier_of_two_lapses_wins() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        slow, fast = LEASED, RateRule(per_minute=6000, burst=100)
        assert await take(limiter, 1, slow)  # lapses at 1.0
        await asyncio.sleep(0.5)
        assert await take(limiter, 10, fast)  # 9 held, 1 missing: Redis full again in 0.1 s
        await asyncio.sleep(0.09)
        assert shared.calls[-1][0] == "lease"
        await asyncio.sleep(0.02)
        await settle()
        assert shared.calls[-1] == ("charge", -9)
        await asyncio.sleep(1)  # and only once
        await settle()
        assert [call[0] for call in shared.calls].count("charge") == 1

    in_virtual_time(main)


def test_a_later_lapse_does_not_postpone_the_first() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        fast = RateRule(per_minute=600, burst=100)
        assert await take(limiter, 1, fast)  # lapses at 1.0 (full in 1 s at 10 a second)
        await asyncio.sleep(0.5)
        assert await take(limiter, 10, LEASED)  # would lapse at 1.5
        await asyncio.sleep(0.5)
        await settle()
        assert shared.calls[-1] == ("charge", -9)

    in_virtual_time(main)


def test_a_spent_lease_gives_nothing_back() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        for _ in range(10):
            assert await take(limiter)
        await asyncio.sleep(2)
        await settle()
        assert [call[0] for call in shared.calls] == ["lease"]

    in_virtual_time(main)


def test_tokens_set_aside_after_their_lease_lapsed_go_back_to_redis() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert await take(limiter, 8)  # 2 held
        shared.latency = 2.0  # the lease lapses while the next call waits on Redis
        shared.tokens["s"] = 0.0
        assert not await take(limiter, 5)
        await settle()
        assert shared.calls[-1] == ("charge", -2)

    in_virtual_time(main)


def test_a_refund_is_kept_up_to_a_lease_and_the_rest_goes_back() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        await limiter.charge("s", -5, LEASED)  # no lease: all of it back to Redis
        assert shared.calls == [("charge", -5)]
        assert await take(limiter, 5)  # 5 held
        await limiter.charge("s", -3, LEASED)  # kept: 8 held
        assert len(shared.calls) == 2
        await limiter.charge("s", -4, LEASED)  # 2 kept (a lease is 10), 2 back
        assert shared.calls[-1] == ("charge", -2)
        for _ in range(10):
            assert await take(limiter)
        assert len(shared.calls) == 3

    in_virtual_time(main)


def test_a_refund_one_more_than_the_lease_has_room_for_sends_that_one_back() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert await take(limiter, 4)  # 6 held: room for 4
        await limiter.charge("s", -5, LEASED)
        assert shared.calls[-1] == ("charge", -1)

    in_virtual_time(main)


def test_a_fractional_refund_kept_whole_costs_no_round_trip() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert await take(limiter, 4)  # 6 held: room for 4
        await limiter.charge("s", -2.5, LEASED)
        assert len(shared.calls) == 1
        for _ in range(8):  # 8.5 held
            assert await take(limiter)
        assert await take(limiter, 0.5)
        assert len(shared.calls) == 1

    in_virtual_time(main)


def test_a_lease_of_one_keeps_a_refund_of_one() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock, fraction=0.001)  # a lease is one token at least
        assert await take(limiter)  # the call's own token: nothing held
        await limiter.charge("s", -1, LEASED)
        assert len(shared.calls) == 1  # kept
        assert await take(limiter)
        assert len(shared.calls) == 1

    in_virtual_time(main)


def test_a_fraction_of_a_token_is_asked_for_as_a_whole_lease() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock, fraction=0.001)
        assert await take(limiter, 0.5)
        assert shared.calls == [("lease", 0.5, 1.0, 10.0)]

    in_virtual_time(main)


def test_a_fractional_charge_without_a_lease_is_charged_to_redis() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        await limiter.charge("s", 0.5, LEASED)
        assert shared.calls == [("charge", 0.5)]

    in_virtual_time(main)


def test_a_fractional_refund_to_a_full_lease_goes_back() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert await take(limiter)  # 9 held
        await limiter.charge("s", -1, LEASED)  # 10 held: full
        await limiter.charge("s", -0.5, LEASED)
        assert shared.calls[-1] == ("charge", -0.5)

    in_virtual_time(main)


def test_the_last_unspent_token_of_a_lease_goes_back_too() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        for _ in range(9):  # one of the lease's ten left
            assert await take(limiter)
        await asyncio.sleep(LEASE_HOLD_SECONDS)
        await settle()
        assert shared.calls[-1] == ("charge", -1)

    in_virtual_time(main)


def test_a_lease_overfilled_by_calls_at_once_keeps_no_refund() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert await take(limiter, 5)  # 5 held
        shared.latency = 1.0
        # Both wait on Redis at once: the first sets the 5 aside, and each then holds
        # what its lease left over, 7 and 9: more than a lease.
        both = await asyncio.gather(take(limiter, 8), take(limiter, 1))
        assert both == [True, True]
        await limiter.charge("s", -1, LEASED)
        assert shared.calls[-1] == ("charge", -1)  # no room: all of it back

    in_virtual_time(main)


def test_a_give_back_that_fails_does_not_stop_the_limiter_from_closing() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert await take(limiter)
        shared.charge_failure = ConnectionError("Redis went away")
        await limiter.aclose()
        assert shared.calls[-1] == ("charge", -9)

    in_virtual_time(main)


def test_a_refund_to_a_full_lease_goes_back_whole() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert await take(limiter, 5)  # 5 held
        await limiter.charge("s", 20, LEASED)  # more than held: 5 set aside, 15 from Redis
        assert shared.calls[-1] == ("charge", 15)
        await limiter.charge("s", -12, LEASED)  # 10 kept
        assert shared.calls[-1] == ("charge", -2)
        await limiter.charge("s", -3, LEASED)
        assert shared.calls[-1] == ("charge", -3)

    in_virtual_time(main)


def test_a_charge_spends_the_lease_first() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert await take(limiter, 5)  # 5 held
        await limiter.charge("s", 5, LEASED)  # exactly what is held: no round trip
        assert len(shared.calls) == 1
        assert await take(limiter)  # nothing held: Redis
        assert len(shared.calls) == 2
        await limiter.charge("s", 0, LEASED)
        assert len(shared.calls) == 2

    in_virtual_time(main)


def test_a_stopping_limiter_gives_every_lease_back_once() -> None:
    async def main(clock: ManualClock) -> None:
        limiter, shared = leased(clock)
        assert (await limiter.take("a", 1, LEASED)).allowed
        assert (await limiter.take("b", 4, LEASED)).allowed
        await limiter.aclose()
        assert sorted(call for call in shared.calls if call[0] == "charge") == [
            ("charge", -9),
            ("charge", -6),
        ]
        assert math.isclose(shared.left("a"), 99) and math.isclose(shared.left("b"), 96)
        await asyncio.sleep(5)
        await settle()
        assert len(shared.calls) == 4

    in_virtual_time(main)


# -- the Redis limiter when Redis is not there -----------------------------------------------
# Its answers with Redis up are tested against a real Redis in tests/system; here Redis is
# a Unix socket nobody listens on: every call fails as it does with Redis down.


def down_redis(tmp_path: Path, on_failure: Literal["open", "closed"]) -> RedisRateLimiter:
    settings = SharedStateSettings(
        redis_url=f"unix://{tmp_path / 'absent.sock'}", on_failure=on_failure
    )
    return RedisRateLimiter(SharedRedis(settings))


def test_with_redis_down_and_failing_open_a_call_is_let_through_with_nothing_to_hold(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        limiter = down_redis(tmp_path, "open")
        assert await limiter.take("k", 3, RULE) == ALLOWED
        assert await limiter.lease("k", 2, 5, RULE) == Grant(2)  # the least, held nowhere
        await limiter.charge("k", 3, RULE)  # unrecorded: the lesser harm

    asyncio.run(test())


def test_with_redis_down_and_failing_closed_a_call_is_refused_as_unavailable(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        limiter = down_redis(tmp_path, "closed")
        with pytest.raises(SharedStateUnavailable):
            await limiter.take("k", 1, RULE)
        await limiter.charge("k", 3, RULE)  # a charge never fails the call

    asyncio.run(test())
