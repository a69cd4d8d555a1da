"""Retry pacing: full-jitter backoff under an exponential ceiling, and the retry budget."""

from __future__ import annotations

import random

import pytest

from ai_service.config import RetrySettings
from ai_service.resilience import RetryBudget, backoff_delay
from tests.clock import ManualClock


@pytest.mark.parametrize(
    ("retry", "ceiling"), [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]
)
def test_a_backoff_is_uniform_below_base_times_two_to_the_retry_capped(
    retry: int, ceiling: float
) -> None:
    settings = RetrySettings(backoff_base_ms=100, backoff_max_ms=1000)
    assert backoff_delay(retry, settings, random.Random(5)) == pytest.approx(
        random.Random(5).uniform(0.0, ceiling)
    )


def test_a_backoff_without_a_generator_draws_from_the_process_s() -> None:
    settings = RetrySettings(backoff_base_ms=100, backoff_max_ms=1000)
    random.seed(3)
    expected = random.uniform(0.0, 0.2)
    random.seed(3)
    assert backoff_delay(2, settings) == pytest.approx(expected)


def budget(clock: ManualClock, ratio: float = 0.2, per_second: float = 0.0) -> RetryBudget:
    return RetryBudget(RetrySettings(budget_ratio=ratio, budget_min_per_second=per_second), clock)


def spend_all(retries: RetryBudget) -> int:
    spent = 0
    while retries.try_spend():
        spent += 1
    return spent


def test_a_new_budget_allows_a_burst_of_ten_retries_or_ten_seconds_of_its_allowance() -> None:
    clock = ManualClock()
    assert spend_all(budget(clock, per_second=0)) == 10
    assert spend_all(budget(clock, per_second=0.5)) == 10
    assert spend_all(budget(clock, per_second=2)) == 20


def test_the_budget_counts_retries_and_refusals() -> None:
    retries = budget(ManualClock())
    spend_all(retries)
    assert not retries.try_spend()
    assert (retries.retries, retries.denied) == (10, 2)


def test_calls_earn_their_ratio_of_a_retry() -> None:
    clock = ManualClock()
    retries = budget(clock, ratio=0.25)
    spend_all(retries)
    for _ in range(3):
        retries.record_call()
    assert not retries.try_spend()  # 0.75
    retries.record_call()
    assert retries.try_spend()  # exactly 1.0
    assert not retries.try_spend()


def test_earned_retries_stop_at_the_cap() -> None:
    retries = budget(ManualClock(), ratio=1.0)
    for _ in range(50):
        retries.record_call()
    assert spend_all(retries) == 10


def test_the_steady_allowance_refills_with_time_up_to_the_cap() -> None:
    clock = ManualClock()
    retries = budget(clock, ratio=0.25, per_second=2)
    spend_all(retries)
    clock.now += 1.5
    assert spend_all(retries) == 3  # 2 a second, counted once
    clock.now += 3600
    assert spend_all(retries) == 20
    clock.now += 0.25
    retries.record_call()  # the refill counts before the ratio: 0.5 + 0.25
    assert not retries.try_spend()
    clock.now += 0.125
    assert retries.try_spend()  # 0.75 + 0.25


def test_the_allowance_refills_by_the_time_passed_whatever_the_clock_read_before() -> None:
    # A monotonic clock may start near zero (seconds since boot): the refill is the time
    # between two reads, not any other function of them.
    clock = ManualClock(now=1.0)
    retries = budget(clock, ratio=0.0, per_second=2)
    spend_all(retries)
    clock.now = 2.5
    assert spend_all(retries) == 3
    clock.now = 7.0
    assert spend_all(retries) == 9
