"""The circuit breaker on a test's clock: when it opens, how it probes, how it closes, and
whom it tells."""

from __future__ import annotations

from typing import Any

from ai_service.config import CircuitBreakerSettings
from ai_service.resilience import Admission, CircuitBreaker, CircuitState
from tests.clock import ManualClock

CALL, PROBE = Admission.CALL, Admission.PROBE
CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class Watched:
    """A breaker and what it told its follower (whether it admitted a call, each time)."""

    def __init__(self, **settings: Any) -> None:
        self.clock = ManualClock()
        self.told: list[bool] = []
        self.breaker = CircuitBreaker(
            "d",
            CircuitBreakerSettings.model_validate(settings),
            on_change=lambda changed: self.told.append(changed.allows()),
            clock=self.clock,
        )

    def fail(self, times: int = 1) -> None:
        for _ in range(times):
            self.breaker.record(CALL, failed=True)

    def succeed(self, times: int = 1) -> None:
        for _ in range(times):
            self.breaker.record(CALL, failed=False)


def opened(**settings: Any) -> Watched:
    """A breaker just opened by one failure, cooling down for 10 s."""
    watched = Watched(consecutive_failures=1, open_seconds=10, **settings)
    watched.fail()
    assert watched.breaker.state is OPEN
    return watched


def test_a_new_breaker_is_closed_and_admits_calls() -> None:
    breaker = Watched().breaker
    assert breaker.state is CLOSED and breaker.allows()
    assert breaker.admit() is CALL
    assert breaker.settings.consecutive_failures == 5


def test_it_opens_at_exactly_the_consecutive_failures_and_says_so() -> None:
    watched = Watched(consecutive_failures=3, min_calls=100)
    watched.fail(2)
    assert watched.breaker.state is CLOSED and watched.told == []
    watched.fail()
    assert watched.breaker.state is OPEN
    assert not watched.breaker.allows() and watched.breaker.admit() is None
    assert watched.told == [False]


def test_a_success_starts_the_count_of_failures_in_a_row_again() -> None:
    watched = Watched(consecutive_failures=3, min_calls=100)
    watched.fail(2)
    watched.succeed()
    watched.fail(2)
    assert watched.breaker.state is CLOSED
    watched.fail()
    assert watched.breaker.state is OPEN


def test_it_opens_when_the_failure_rate_reaches_its_threshold_over_enough_calls() -> None:
    watched = Watched(consecutive_failures=100, failure_rate=0.5, min_calls=4)
    watched.fail()
    watched.succeed()
    watched.fail()
    assert watched.breaker.state is CLOSED  # 2 of 3: too few calls to judge
    watched.succeed()  # 2 of 4: exactly the rate
    assert watched.breaker.state is OPEN


def test_below_the_failure_rate_it_stays_closed() -> None:
    watched = Watched(consecutive_failures=100, failure_rate=0.5, min_calls=4)
    watched.succeed(2)
    watched.fail()
    watched.succeed()
    watched.fail()  # 2 of 5
    assert watched.breaker.state is CLOSED


def test_only_the_window_s_calls_count_toward_the_rate() -> None:
    watched = Watched(consecutive_failures=100, failure_rate=0.5, min_calls=4, window_seconds=10)
    watched.fail(3)
    watched.clock.now += 10
    watched.succeed()  # exactly 10 s later: the failures are still in the window (3 of 4)
    assert watched.breaker.state is OPEN

    watched = Watched(consecutive_failures=100, failure_rate=0.5, min_calls=4, window_seconds=10)
    watched.fail(3)
    watched.clock.now += 10.5
    watched.succeed(3)  # the failures fell out: 0 of 3 in the window
    watched.fail()  # 1 of 4
    assert watched.breaker.state is CLOSED
    watched.fail()  # 2 of 5
    assert watched.breaker.state is CLOSED
    watched.fail()  # 3 of 6
    assert watched.breaker.state is OPEN


def test_successes_that_leave_the_window_do_not_lower_its_failures() -> None:
    watched = Watched(consecutive_failures=100, failure_rate=0.5, min_calls=4, window_seconds=10)
    watched.succeed(2)
    watched.clock.now += 5
    watched.fail(2)  # 2 of 4: open
    assert watched.breaker.state is OPEN

    watched = Watched(consecutive_failures=100, failure_rate=0.5, min_calls=2, window_seconds=10)
    watched.succeed(2)
    watched.clock.now += 5
    watched.fail()  # 1 of 3
    watched.clock.now += 6  # the successes leave: 1 of 1, too few
    watched.succeed()  # 1 of 2
    assert watched.breaker.state is OPEN


def test_open_it_refuses_until_the_cool_down_has_passed() -> None:
    watched = opened()
    watched.clock.now += 9.9
    assert watched.breaker.state is OPEN and watched.breaker.admit() is None
    watched.clock.now += 0.1  # exactly the cool-down
    assert watched.breaker.state is HALF_OPEN and watched.breaker.allows()


def test_calls_recorded_while_open_change_nothing() -> None:
    watched = opened()
    watched.succeed(5)
    assert watched.breaker.state is OPEN
    watched.clock.now += 10
    assert watched.breaker.state is HALF_OPEN


def test_half_open_it_lets_its_probes_through_and_no_more() -> None:
    watched = opened(half_open_probes=2)
    watched.clock.now += 10
    assert watched.breaker.admit() is PROBE
    assert watched.told == [False, True]  # opened; half-open, and another probe may go
    assert watched.breaker.allows()
    assert watched.breaker.admit() is PROBE
    assert not watched.breaker.allows() and watched.breaker.admit() is None
    assert watched.told == [False, True, False]
    watched.breaker.abandon(PROBE)
    assert watched.breaker.allows() and watched.told[-1] is True
    assert watched.breaker.admit() is PROBE
    assert watched.breaker.admit() is None  # one given back, one taken: two out again


def test_a_probe_s_success_closes_it_afresh() -> None:
    watched = opened(min_calls=2, failure_rate=0.5)
    watched.clock.now += 10
    probe = watched.breaker.admit()
    assert probe is PROBE
    watched.breaker.record(probe, failed=False)
    assert watched.breaker.state is CLOSED and watched.told[-1] is True
    assert watched.breaker.admit() is CALL
    # The count starts again: the failure that opened it is forgotten.
    watched.succeed()
    watched.fail()  # 1 of 2 since it closed; and 1 in a row opens it (setting 1)
    assert watched.breaker.state is OPEN


def test_the_window_starts_empty_when_it_closes() -> None:
    watched = Watched(consecutive_failures=3, failure_rate=0.5, min_calls=4, open_seconds=10)
    watched.fail(3)
    watched.clock.now += 10
    watched.breaker.record(watched.breaker.admit() or CALL, failed=False)
    watched.fail(2)  # 2 of 2 in the window, but too few calls; 2 in a row of 3
    assert watched.breaker.state is CLOSED
    watched.succeed()
    watched.fail()  # 3 of 4
    assert watched.breaker.state is OPEN


def test_a_probe_s_failure_reopens_it_for_a_full_cool_down() -> None:
    watched = opened()
    watched.clock.now += 15
    watched.breaker.record(watched.breaker.admit() or CALL, failed=True)
    assert watched.breaker.state is OPEN
    watched.clock.now += 9.9
    assert watched.breaker.admit() is None
    watched.clock.now += 0.1
    assert watched.breaker.admit() is PROBE


def test_a_reopened_circuit_forgets_the_probes_it_had_out() -> None:
    watched = opened(half_open_probes=2)
    watched.clock.now += 10
    first, second = watched.breaker.admit(), watched.breaker.admit()
    assert first is PROBE and second is PROBE
    watched.breaker.record(first, failed=True)  # reopened
    watched.breaker.record(second, failed=False)  # late: changes nothing
    assert watched.breaker.state is OPEN
    watched.clock.now += 10
    assert [watched.breaker.admit() for _ in range(3)] == [PROBE, PROBE, None]


def test_a_probe_recorded_after_another_closed_the_circuit_counts_as_a_call() -> None:
    watched = opened(half_open_probes=2)
    watched.clock.now += 10
    first, second = watched.breaker.admit(), watched.breaker.admit()
    watched.breaker.record(first or CALL, failed=False)  # closed
    watched.breaker.record(second or CALL, failed=True)  # a failure of a closed circuit
    assert watched.breaker.state is OPEN


def test_an_abandoned_call_leaves_no_verdict() -> None:
    watched = Watched(consecutive_failures=1)
    watched.breaker.abandon(CALL)
    assert watched.breaker.state is CLOSED and watched.told == []
    watched = opened()
    watched.breaker.abandon(PROBE)  # open, not half-open: nothing to say
    assert watched.told == [False]
    watched.clock.now += 10
    assert [watched.breaker.admit(), watched.breaker.admit()] == [PROBE, None]


def test_the_cool_down_is_measured_whatever_the_clock_s_origin() -> None:
    watched = Watched(consecutive_failures=1, open_seconds=10)
    watched.clock.now = 1.0  # a monotonic clock may start near 0 (a machine just booted)
    watched.fail()
    watched.clock.now += 10
    assert watched.breaker.state is HALF_OPEN


def test_a_probe_given_back_of_three_out_frees_exactly_one_place() -> None:
    watched = opened(half_open_probes=3)
    watched.clock.now += 10
    assert [watched.breaker.admit() for _ in range(3)] == [PROBE, PROBE, PROBE]
    watched.breaker.abandon(PROBE)
    assert [watched.breaker.admit(), watched.breaker.admit()] == [PROBE, None]


def test_the_failure_rate_counts_from_nothing_once_it_closes() -> None:
    watched = Watched(consecutive_failures=5, failure_rate=0.5, min_calls=2, open_seconds=10)
    watched.fail(2)  # 2 of 2
    assert watched.breaker.state is OPEN
    watched.clock.now += 10
    watched.breaker.record(watched.breaker.admit() or CALL, failed=False)
    assert watched.breaker.state is CLOSED
    watched.succeed(2)  # none of 2 since it closed
    assert watched.breaker.state is CLOSED
    watched.fail()  # 1 of 3
    assert watched.breaker.state is CLOSED
    watched.fail()  # 2 of 4: the rate is reached
    assert watched.breaker.state is OPEN


def test_thresholds_above_a_few_hundred_count_like_small_ones() -> None:
    # Large counts are distinct objects in Python: they must be compared by value.
    watched = Watched(consecutive_failures=300, min_calls=1000)
    watched.fail(299)
    assert watched.breaker.state is CLOSED
    watched.fail()
    assert watched.breaker.state is OPEN
    watched = opened(half_open_probes=300)
    watched.clock.now += 10
    assert all(watched.breaker.admit() is PROBE for _ in range(300))
    assert watched.breaker.admit() is None
