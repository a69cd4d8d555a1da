"""The resilience primitives on their own: breaker, retry budget, backoff, limiter, balancing."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from ai_service.calls.record import CallRecord, current_call
from ai_service.config import CircuitBreakerSettings, RetrySettings, parse_config
from ai_service.errors import DeploymentBusy, UpstreamUnavailable
from ai_service.identity.callers import Caller
from ai_service.pipeline.dispatch import guarded_complete, guarded_stream
from ai_service.providers import create_provider
from ai_service.providers.base import Deployment
from ai_service.resilience import (
    Admission,
    Budget,
    CircuitBreaker,
    CircuitState,
    ConcurrencyLimiter,
    Cooldown,
    RetryBudget,
    backoff_delay,
)
from ai_service.routing.router import DeploymentHandle, Router
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
)
from tests.conftest import until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **settings: float) -> CircuitBreaker:
    return CircuitBreaker("d", CircuitBreakerSettings.model_validate(settings), clock=clock)


def test_breaker_opens_on_consecutive_failures_and_a_success_resets_the_count() -> None:
    clock = Clock()
    cb = breaker(clock, consecutive_failures=3, min_calls=100)
    for failed in (True, True, False, True, True):
        cb.record(Admission.CALL, failed=failed)
    assert cb.state is CircuitState.CLOSED
    cb.record(Admission.CALL, failed=True)
    assert cb.state is CircuitState.OPEN
    assert cb.admit() is None


def test_breaker_opens_on_failure_rate_within_the_window_only() -> None:
    clock = Clock()
    cb = breaker(clock, consecutive_failures=100, failure_rate=0.5, min_calls=4, window_seconds=10)
    for failed in (True, False, True):
        cb.record(Admission.CALL, failed=failed)
    clock.now += 11  # those fall out of the window
    for failed in (False, False, True):
        cb.record(Admission.CALL, failed=failed)
    assert cb.state is CircuitState.CLOSED
    cb.record(Admission.CALL, failed=True)  # 2 of 4 in the window
    assert cb.state is CircuitState.OPEN


def test_breaker_half_opens_after_the_cool_down_with_limited_probes() -> None:
    clock = Clock()
    cb = breaker(clock, consecutive_failures=1, open_seconds=5, half_open_probes=1)
    cb.record(Admission.CALL, failed=True)
    clock.now += 4.9
    assert cb.admit() is None
    clock.now += 0.2
    assert cb.state is CircuitState.HALF_OPEN
    probe = cb.admit()
    assert probe is Admission.PROBE
    assert cb.admit() is None  # one probe at a time
    cb.abandon(probe)  # a cancelled probe frees its slot without a verdict
    probe = cb.admit()
    assert probe is Admission.PROBE
    cb.record(probe, failed=False)
    assert cb.state is CircuitState.CLOSED


def test_breaker_failed_probe_reopens_for_a_full_cool_down() -> None:
    clock = Clock()
    cb = breaker(clock, consecutive_failures=1, open_seconds=5)
    cb.record(Admission.CALL, failed=True)
    clock.now += 5
    cb.record(cb.admit() or Admission.CALL, failed=True)
    assert cb.state is CircuitState.OPEN
    clock.now += 4
    assert cb.admit() is None


def test_breaker_tells_when_its_probes_are_out_and_when_one_is_given_back() -> None:
    # Health follows whether the circuit admits a call: that changes with the probes.
    clock = Clock()
    admits: list[bool] = []
    cb = CircuitBreaker(
        "d",
        CircuitBreakerSettings(consecutive_failures=1, open_seconds=5, half_open_probes=1),
        on_change=lambda changed: admits.append(changed.allows()),
        clock=clock,
    )
    cb.record(Admission.CALL, failed=True)  # open
    clock.now += 5
    probe = cb.admit()
    assert probe is Admission.PROBE
    assert admits[0] is False and admits[-1] is False  # opened; then the probe is out
    cb.abandon(probe)
    assert admits[-1] is True  # a probe may go again


def test_a_cooldown_runs_for_its_seconds_and_keeps_the_longest() -> None:
    clock = Clock()
    cooldown = Cooldown(clock)
    assert cooldown.remaining() == 0
    cooldown.start(2)
    cooldown.start(1)  # a shorter Retry-After does not cut the running one short
    clock.now += 1.5
    assert cooldown.remaining() == pytest.approx(0.5)
    clock.now += 0.5
    assert cooldown.remaining() == 0


def test_retry_budget_allows_its_ratio_of_calls() -> None:
    budget = RetryBudget(RetrySettings(budget_ratio=0.2, budget_min_per_second=0))
    while budget.try_spend():  # drain the initial allowance
        pass
    granted = 0
    for _ in range(1000):
        budget.record_call()
        granted += budget.try_spend()
    assert 195 <= granted <= 200


def test_backoff_is_full_jitter_below_an_exponential_cap() -> None:
    settings = RetrySettings(backoff_base_ms=100, backoff_max_ms=1000)
    rng = random.Random(7)
    for retry, cap in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)):
        delays = [backoff_delay(retry, settings, rng) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # spread over the whole range


async def test_limiter_hands_slots_over_in_order_and_refuses_beyond_the_queue() -> None:
    limiter = ConcurrencyLimiter("d", max_in_flight=1, max_queue=1)
    budget = Budget.for_call(None, 5)
    await limiter.acquire(budget)
    waiting = asyncio.create_task(limiter.acquire(budget))
    await until(lambda: bool(limiter.queued), "a waiter in the queue")
    with pytest.raises(DeploymentBusy):
        await limiter.acquire(budget)
    limiter.release()
    await waiting
    assert (limiter.in_flight, limiter.queued) == (1, 0)
    limiter.release()
    assert limiter.in_flight == 0


async def test_limiter_cancelled_waiter_leaves_no_trace() -> None:
    limiter = ConcurrencyLimiter("d", max_in_flight=1, max_queue=5)
    budget = Budget.for_call(None, 5)
    await limiter.acquire(budget)
    waiting = asyncio.create_task(limiter.acquire(budget))
    await until(lambda: bool(limiter.queued), "a waiter in the queue")
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    limiter.release()
    assert (limiter.in_flight, limiter.queued) == (0, 0)


def _router(balancing: str) -> Router:
    config = parse_config(
        {
            "auth": {"enabled": False},
            "providers": [{"name": "p", "base_url": "http://127.0.0.1:9/v1"}],
            "models": [
                {
                    "name": "m",
                    "balancing": balancing,
                    "deployments": [
                        {"provider": "p", "upstream_model": "a", "weight": 3},
                        {"provider": "p", "upstream_model": "b", "weight": 1},
                    ],
                }
            ],
        },
        env={},
    )
    providers = {p.name: create_provider(p) for p in config.providers}
    return Router(config.models, providers, config.resilience, rng=random.Random(3))


ANYONE = Caller("anyone", frozenset(), None)


def test_weighted_random_picks_first_in_proportion_to_weight() -> None:
    router = _router("weighted_random")
    route = router.resolve("m", ANYONE)
    firsts = Counter(router.candidates(route)[0].name for _ in range(4000))
    assert firsts["p/a"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_least_outstanding_prefers_the_least_loaded_per_weight() -> None:
    router = _router("least_outstanding")
    route = router.resolve("m", ANYONE)
    a, b = (d.handle for d in route.deployments)
    a.limiter.in_flight = 4  # 4 / weight 3 > 1 / weight 1
    b.limiter.in_flight = 1
    assert [h.name for h in router.candidates(route)] == ["p/b", "p/a"]
    a.limiter.in_flight = 2  # 0.67 < 1
    assert [h.name for h in router.candidates(route)] == ["p/a", "p/b"]


def test_open_circuits_go_last() -> None:
    router = _router("least_outstanding")
    route = router.resolve("m", ANYONE)
    a = route.deployments[0].handle
    for _ in range(5):
        a.breaker.record(Admission.CALL, failed=True)
    assert [h.name for h in router.candidates(route)] == ["p/b", "p/a"]


class _Provider:
    """An adapter whose next answer the test decides: a response, an error, or a wait."""

    def __init__(self) -> None:
        self.outcome: BaseException | None = None
        self.release = asyncio.Event()

    async def complete(
        self, request: object, target: object, default_max_tokens: int | None = None
    ) -> ChatCompletionResponse:
        if self.outcome is not None:
            raise self.outcome
        await self.release.wait()
        return ChatCompletionResponse(model="m")

    async def stream(
        self, request: object, target: object, default_max_tokens: int | None = None
    ) -> AsyncIterator[ChatCompletionChunk]:
        return  # an upstream stream that ends before its first chunk
        yield


async def test_an_attempt_reports_failure_success_and_cancellation_as_each_deserves() -> None:
    clock = Clock()
    provider = _Provider()
    handle = DeploymentHandle(
        Deployment("p", "m"),
        provider,  # type: ignore[arg-type]
        breaker(clock, consecutive_failures=1, open_seconds=5, half_open_probes=1),
        ConcurrencyLimiter("p/m", 1, 0),
    )
    call = CallRecord((), "id", "ChatCompletion", streaming=False)
    current_call.set(call)
    budget = Budget(clock.now + 60)
    request = ChatCompletionRequest(model="m")

    provider.outcome = UpstreamUnavailable("down")  # a verdict against the deployment
    with pytest.raises(UpstreamUnavailable):
        await guarded_complete(handle, Admission.CALL, request, budget)
    assert handle.breaker.state is CircuitState.OPEN
    assert call.attempts[-1].error == "UPSTREAM_UNAVAILABLE"
    assert handle.limiter.in_flight == 0

    clock.now += 5
    probe = handle.breaker.admit()
    assert probe is Admission.PROBE
    provider.outcome = None
    attempt = asyncio.ensure_future(guarded_complete(handle, probe, request, budget))
    await until(lambda: bool(handle.limiter.in_flight), "the attempt waiting on the upstream")
    attempt.cancel()  # the caller left: no verdict, and the probe slot is free again
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert call.attempts[-1].error == "CANCELLED"
    assert handle.limiter.in_flight == 0
    probe = handle.breaker.admit()
    assert probe is Admission.PROBE

    provider.release.set()  # a success closes the circuit and serves the call
    await guarded_complete(handle, probe, request, budget)
    assert handle.breaker.state is CircuitState.CLOSED
    assert call.served_by is call.attempts[-1]
    assert handle.limiter.in_flight == 0


async def test_a_stream_that_ends_before_any_chunk_is_a_failed_attempt() -> None:
    # A failure of the deployment: its circuit and the call's record must say so.
    clock = Clock()
    handle = DeploymentHandle(
        Deployment("p", "m"),
        _Provider(),  # type: ignore[arg-type]
        breaker(clock, consecutive_failures=1),
        ConcurrencyLimiter("p/m", 1, 0),
    )
    call = CallRecord((), "id", "StreamChatCompletion", streaming=True)
    current_call.set(call)
    stream = guarded_stream(handle, Admission.CALL, ChatCompletionRequest(), Budget(clock.now + 60))
    with pytest.raises(UpstreamUnavailable, match="before any chunk"):
        await anext(stream)
    assert handle.breaker.state is CircuitState.OPEN
    assert call.attempts[-1].error == "UPSTREAM_UNAVAILABLE"
    assert call.served_by is None
    assert handle.limiter.in_flight == 0


def test_a_hedges_winner_is_who_served_whatever_order_the_racers_end_in() -> None:
    # Both racers may succeed in one loop turn; the dispatcher's choice is the answer
    # the caller got, so it is what the audit, metrics and span report.
    clock = Clock()
    first, second = (
        DeploymentHandle(
            Deployment("p", name),
            _Provider(),  # type: ignore[arg-type]
            breaker(clock),
            ConcurrencyLimiter(f"p/{name}", 1, 0),
        )
        for name in ("a", "b")
    )
    call = CallRecord((), "id", "ChatCompletion", streaming=False)
    slow, fast = call.attempt_started(first), call.attempt_started(second)
    call.attempt_ended(fast, None)
    call.hedge_won(second)
    call.attempt_ended(slow, None)  # a loser that answered too
    assert call.served_by is fast


def test_a_deployment_that_races_itself_is_served_by_the_racer_that_answered() -> None:
    clock = Clock()
    only = DeploymentHandle(
        Deployment("p", "m"),
        _Provider(),  # type: ignore[arg-type]
        breaker(clock),
        ConcurrencyLimiter("p/m", 2, 0),
    )
    call = CallRecord((), "id", "ChatCompletion", streaming=False)
    first, second = call.attempt_started(only), call.attempt_started(only)
    call.attempt_ended(first, None)
    call.attempt_ended(second, "CANCELLED")  # the loser, cancelled
    call.hedge_won(only)
    assert call.served_by is first
