"""The dispatcher's walk over deployments: failover, retries and their waits, the retry
budget, hedging, streams' first chunk, which deployments may take a request, and what each
attempt tells the breaker, the limiter and the call's record.

The adapters are stand-ins (`Scripted`: each upstream model answers what the test
scripted, in order); their wire formats are tested in tests/unit/test_provider_*.py and
against the simulator in tests/integration. Waits run in virtual time (tests/clock.py), so
a test can say exactly how long the dispatcher waited.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from ai_service.calls.record import CallRecord, current_call
from ai_service.config import CircuitBreakerSettings, parse_config
from ai_service.errors import (
    DeploymentBusy,
    GatewayError,
    InvalidRequest,
    NoHealthyDeployment,
    UpstreamAuth,
    UpstreamInvalidRequest,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ai_service.identity.callers import Caller
from ai_service.pipeline.dispatch import (
    Dispatcher,
    counts_against_deployment,
    guarded_complete,
    guarded_stream,
    worth_another_attempt,
)
from ai_service.providers import CAPABILITIES
from ai_service.providers.base import Deployment
from ai_service.resilience import (
    Admission,
    Budget,
    CircuitBreaker,
    CircuitState,
    ConcurrencyLimiter,
)
from ai_service.routing.router import DeploymentHandle, ModelRoute, Router
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbedRequest,
    EmbedResponse,
    Usage,
)
from tests.clock import ManualClock, in_virtual_time

# -- a scripted adapter --------------------------------------------------------------------


@dataclass
class Wait:
    """Answer `then` after `seconds`."""

    seconds: float
    then: object


@dataclass
class Do:
    """Do `action` at this moment of the exchange, then answer `then`."""

    action: Callable[[], object]
    then: object


Step = object  # a response, an exception to raise, a Wait, a Do, or a list of chunks (a stream)


def response(text: str = "ok") -> ChatCompletionResponse:
    answer = ChatCompletionResponse(model="upstream-model")
    answer.choices.add(index=0, finish_reason="stop").message.content = text
    return answer


def chunk(content: str = "", role: str = "", finish: str = "") -> ChatCompletionChunk:
    piece = ChatCompletionChunk(model="upstream-model")
    choice = piece.choices.add(index=0, finish_reason=finish)
    choice.delta.content, choice.delta.role = content, role
    return piece


@dataclass
class Scripted:
    """A provider adapter whose answers the test scripts, per upstream model, in order."""

    name: str = "p"
    kind: str = "openai"
    refuses_requests: bool = False
    carries: frozenset[str] = frozenset(CAPABILITIES)
    #: Why it refuses a request, if it does (its API cannot carry it).
    refuses: Callable[[ChatCompletionRequest], InvalidRequest | None] = lambda _: None
    steps: dict[str, list[Step]] = field(default_factory=dict)
    #: Each call: (upstream model, the loop's time, the default max_tokens it was given).
    calls: list[tuple[str, float, int | None]] = field(default_factory=list)
    #: Streams opened and not yet closed.
    open_streams: int = 0

    def script(self, upstream: str, *steps: Step) -> None:
        self.steps.setdefault(upstream, []).extend(steps)

    def _next(self, deployment: Deployment, default: int | None) -> Step:
        self.calls.append((deployment.upstream_model, asyncio.get_running_loop().time(), default))
        return self.steps[deployment.upstream_model].pop(0)

    @staticmethod
    async def _settle(step: Step) -> Step:
        while isinstance(step, Wait | Do):
            if isinstance(step, Do):
                step.action()
            else:
                await asyncio.sleep(step.seconds)
            step = step.then
        if isinstance(step, BaseException):
            raise step
        return step

    async def complete(
        self, request: ChatCompletionRequest, deployment: Deployment, default: int | None = None
    ) -> ChatCompletionResponse:
        answer = await self._settle(self._next(deployment, default))
        assert isinstance(answer, ChatCompletionResponse)
        copy = ChatCompletionResponse()
        copy.CopyFrom(answer)
        return copy

    async def stream(
        self, request: ChatCompletionRequest, deployment: Deployment, default: int | None = None
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        step = self._next(deployment, default)
        self.open_streams += 1
        try:
            pieces = await self._settle(step)
            assert isinstance(pieces, list)
            for piece in pieces:
                piece = await self._settle(piece)
                assert isinstance(piece, ChatCompletionChunk)
                copy = ChatCompletionChunk()
                copy.CopyFrom(piece)
                yield copy
        finally:
            self.open_streams -= 1

    def refusal(self, request: ChatCompletionRequest) -> InvalidRequest | None:
        return self.refuses(request)

    async def embed(self, request: EmbedRequest, deployment: Deployment) -> EmbedResponse:
        answer = await self._settle(self._next(deployment, None))
        assert isinstance(answer, EmbedResponse)
        return answer

    async def aclose(self) -> None:
        pass


# -- a router over scripted adapters -------------------------------------------------------

#: m is served by p/a, then its fallbacks f (p/b) and g (p/c): a fixed order of three.
#: solo has one deployment (p/s). Each sets its own default max_tokens.
MODELS: list[dict[str, Any]] = [
    {
        "name": "m",
        "provider": "p",
        "upstream_model": "a",
        "fallbacks": ["f", "g"],
        "default_max_tokens": 300,
    },
    {"name": "f", "provider": "p", "upstream_model": "b", "default_max_tokens": 400},
    {"name": "g", "provider": "p", "upstream_model": "c", "default_max_tokens": 500},
    {"name": "solo", "provider": "p", "upstream_model": "s"},
]
ANYONE = Caller("anyone", frozenset(), None)
RETRIES = {"max_attempts": 5, "backoff_base_ms": 100, "backoff_max_ms": 1000}


@dataclass
class World:
    router: Router
    dispatcher: Dispatcher
    providers: dict[str, Scripted]
    call: CallRecord

    @property
    def p(self) -> Scripted:
        return self.providers["p"]

    def route(self, model: str) -> ModelRoute:
        return self.router.resolve(model, ANYONE)

    def handle(self, upstream: str) -> DeploymentHandle:
        return next(h for h in self.router.deployments if h.target.upstream_model == upstream)

    async def ask(
        self,
        model: str = "m",
        request: ChatCompletionRequest | None = None,
        seconds: float = 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> Any:
        request = request or ChatCompletionRequest(model=model)
        budget = Budget(clock() + seconds, clock)
        return await self.dispatcher.dispatch(request, self.route(model), budget)

    def asked(self) -> list[str]:
        return [upstream for upstream, _, _ in self.p.calls]

    def times(self) -> list[float]:
        return [at for _, at, _ in self.p.calls]


def world(
    models: list[dict[str, Any]] | None = None,
    providers: list[Scripted] | None = None,
    **resilience: Any,
) -> World:
    scripted = providers or [Scripted()]
    resilience["retries"] = {**RETRIES, **resilience.get("retries", {})}
    tree = {
        "auth": {"enabled": False},
        "providers": [
            {"name": s.name, "kind": s.kind, "base_url": "http://127.0.0.1:9/v1"} for s in scripted
        ],
        "models": models or MODELS,
        "resilience": resilience,
    }
    config = parse_config(tree, env={})
    by_name = {s.name: s for s in scripted}
    router = Router(config.models, by_name, config.resilience, rng=random.Random(1))  # type: ignore[arg-type]
    call = CallRecord((), "id", "ChatCompletion", streaming=False)
    current_call.set(call)
    return World(router, Dispatcher(router, config.resilience.retries), by_name, call)


def virtual(test: Callable[[World], Coroutine[Any, Any, None]], **settings: Any) -> None:
    """Run `test` on a fresh world, in virtual time."""

    async def main(_: ManualClock) -> None:
        await test(world(**settings))

    in_virtual_time(main)


# -- failover and retries ------------------------------------------------------------------


def test_the_first_deployment_answers_and_is_named() -> None:
    async def test(w: World) -> None:
        w.p.script("a", response("hello"))
        outcome = await w.ask()
        assert (outcome.handle.name, outcome.attempts) == ("p/a", 1)
        assert outcome.value.choices[0].message.content == "hello"
        assert (outcome.value.provider, outcome.value.deployment) == ("p", "p/a")
        assert w.asked() == ["a"]
        assert w.p.calls[0][2] == 300  # the serving model's default max_tokens

    virtual(test)


@pytest.mark.parametrize(
    "error",
    [
        UpstreamUnavailable("502"),
        UpstreamTimeout("quiet"),
        UpstreamRateLimited("429", retry_after=None),
        DeploymentBusy("full"),
        UpstreamAuth("key refused"),
    ],
)
def test_a_failure_another_deployment_may_fix_moves_on_at_once(error: GatewayError) -> None:
    async def test(w: World) -> None:
        w.p.script("a", error)
        w.p.script("b", response())
        outcome = await w.ask()
        assert (outcome.handle.name, outcome.attempts) == ("p/b", 2)
        assert w.asked() == ["a", "b"]
        assert w.times()[1] == w.times()[0]  # another deployment: no wait
        assert w.p.calls[1][2] == 400  # b serves as f, with f's default

    virtual(test)


@pytest.mark.parametrize(
    "error",
    [
        UpstreamInvalidRequest("400"),
        UpstreamNotFound("404"),
        InvalidRequest("messages", "bad"),
        GatewayError("internal"),
    ],
)
def test_a_failure_no_other_attempt_can_fix_is_final(error: GatewayError) -> None:
    async def test(w: World) -> None:
        w.p.script("a", error)
        with pytest.raises(type(error)) as raised:
            await w.ask()
        assert raised.value is error
        assert w.asked() == ["a"]

    virtual(test)


def test_which_failures_are_worth_another_attempt_and_which_count_against_a_deployment() -> None:
    assert worth_another_attempt(UpstreamAuth("refused"))
    assert worth_another_attempt(UpstreamUnavailable("x"))
    assert not worth_another_attempt(UpstreamInvalidRequest("x"))
    against = [UpstreamUnavailable("x"), UpstreamTimeout("x"), UpstreamAuth("x")]
    assert all(counts_against_deployment(error) for error in against)
    not_against = [
        UpstreamRateLimited("x", retry_after=1),
        DeploymentBusy("x"),
        UpstreamInvalidRequest("x"),
        UpstreamNotFound("x"),
    ]
    assert not any(counts_against_deployment(error) for error in not_against)


def test_fresh_deployments_go_first_then_failed_ones_after_a_backoff() -> None:
    async def test(w: World) -> None:
        for upstream in "abc":
            w.p.script(upstream, UpstreamUnavailable(upstream))
        w.p.script("a", UpstreamUnavailable("a again"), response())
        outcome = await w.ask()
        # The failed ones in their order again: the best of them first.
        assert w.asked() == ["a", "b", "c", "a", "a"]
        assert (outcome.handle.name, outcome.attempts) == ("p/a", 5)
        # Fresh ones at once; back to failed ones after full jitter below 100 ms *
        # 2^(retry - 1), the third and fourth retries of the call.
        assert waits(w) == pytest.approx([0, 0, *expected])

    expected = jitter(13, (0.4, 0.8))
    virtual(test)


def waits(w: World) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(w.times())]


def jitter(seed: int, ceilings: tuple[float, ...]) -> list[float]:
    """Full jitter's waits under `ceilings`, as the process's random numbers seeded with
    `seed` draw them: uniform between 0 and each ceiling."""
    random.seed(seed)
    draws = [random.random() * ceiling for ceiling in ceilings]
    random.seed(seed)
    return draws


def test_the_same_deployment_is_retried_after_an_exponential_backoff() -> None:
    async def test(w: World) -> None:
        w.p.script("s", *(UpstreamUnavailable(str(n)) for n in range(4)), response())
        outcome = await w.ask("solo")
        assert (outcome.handle.name, outcome.attempts) == ("p/s", 5)
        assert waits(w) == pytest.approx(expected)

    # Up to 100 ms * 2^(retry - 1): 0.1, 0.2, 0.4, 0.8 seconds.
    expected = jitter(11, (0.1, 0.2, 0.4, 0.8))
    virtual(test)


def test_a_backoff_is_capped() -> None:
    async def test(w: World) -> None:
        w.p.script("s", *(UpstreamUnavailable(str(n)) for n in range(4)), response())
        await w.ask("solo")
        assert waits(w) == pytest.approx(expected)

    expected = jitter(12, (0.1, 0.15, 0.15, 0.15))
    virtual(test, retries={"backoff_max_ms": 150})


def test_an_upstream_s_retry_after_is_waited_out_exactly() -> None:
    async def test(w: World) -> None:
        w.p.script("s", UpstreamRateLimited("429", retry_after=2.5), response())
        outcome = await w.ask("solo")
        assert outcome.attempts == 2
        at = w.times()
        assert at[1] - at[0] == pytest.approx(2.5)
        # The deployment cools down for whoever else asks meanwhile.
        assert w.handle("s").cooldown.remaining() > 2

    virtual(test)


def test_a_wait_that_would_outlive_the_call_gives_up_at_once() -> None:
    async def test(w: World) -> None:
        error = UpstreamRateLimited("429", retry_after=5)
        w.p.script("s", error, response())
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamRateLimited) as raised:
            await w.ask("solo", seconds=4)
        assert raised.value is error
        assert w.asked() == ["s"]
        assert loop.time() == started

    virtual(test)


def test_a_wait_exactly_as_long_as_what_is_left_of_the_call_gives_up_at_once() -> None:
    """Waiting to the deadline itself would leave the retry no time at all."""

    async def test(clock: ManualClock) -> None:
        w = world()
        error = UpstreamRateLimited("429", retry_after=4)
        w.p.script("s", error, response())
        with pytest.raises(UpstreamRateLimited) as raised:
            await w.ask("solo", seconds=4, clock=clock)  # the deadline on the loop's clock
        assert raised.value is error
        assert w.asked() == ["s"]
        assert clock.now == 1000

    in_virtual_time(test)


def test_a_retry_after_within_the_deadline_is_waited() -> None:
    async def test(w: World) -> None:
        w.p.script("s", UpstreamRateLimited("429", retry_after=3), response())
        outcome = await w.ask("solo", seconds=4)
        assert outcome.attempts == 2

    virtual(test)


def test_a_call_out_of_time_tries_nothing_more() -> None:
    async def test(w: World) -> None:
        error = UpstreamUnavailable("a")
        w.p.script("a", error)
        w.p.script("b", response())
        with pytest.raises(UpstreamUnavailable) as raised:
            await w.ask(seconds=-0.5)  # already past its deadline, by less than a second
        assert raised.value is error
        assert w.asked() == ["a"]

    virtual(test)


def test_attempts_stop_at_the_maximum_with_the_last_error() -> None:
    async def test(w: World) -> None:
        errors = [UpstreamUnavailable(str(n)) for n in range(5)]
        w.p.script("s", *errors, response())
        with pytest.raises(UpstreamUnavailable) as raised:
            await w.ask("solo")
        assert raised.value is errors[-1]
        assert len(w.asked()) == 5

    virtual(test)


def test_one_attempt_when_the_maximum_is_one() -> None:
    async def test(w: World) -> None:
        w.p.script("a", UpstreamUnavailable("a"))
        w.p.script("b", response())
        with pytest.raises(UpstreamUnavailable):
            await w.ask()
        assert w.asked() == ["a"]

    virtual(test, retries={"max_attempts": 1})


def test_an_empty_retry_budget_ends_the_call_with_its_error() -> None:
    async def test(w: World) -> None:
        budget = w.dispatcher.retry_budget
        while budget.try_spend():
            pass
        error = UpstreamUnavailable("a")
        w.p.script("a", error)
        w.p.script("b", response())
        with pytest.raises(UpstreamUnavailable) as raised:
            await w.ask()
        assert raised.value is error
        assert w.asked() == ["a"]

    virtual(test, retries={"budget_ratio": 0, "budget_min_per_second": 0})


def test_each_call_earns_the_retry_budget_its_ratio() -> None:
    async def test(w: World) -> None:
        budget = w.dispatcher.retry_budget
        while budget.try_spend():
            pass
        for _ in range(2):  # two calls at 0.5: one retry earned
            w.p.script("s", response())
            await w.ask("solo")
        w.p.script("a", UpstreamUnavailable("a"))
        w.p.script("b", UpstreamUnavailable("b"))
        w.p.script("c", response())
        with pytest.raises(UpstreamUnavailable):
            await w.ask()
        assert w.asked()[2:] == ["a", "b"]  # this call's own 0.5 is not a whole retry

    virtual(test, retries={"budget_ratio": 0.5, "budget_min_per_second": 0})


# -- which deployments are asked -----------------------------------------------------------


def test_a_deployment_cooling_down_is_skipped() -> None:
    async def test(w: World) -> None:
        w.handle("a").cooldown.start(30)
        w.p.script("b", response())
        outcome = await w.ask()
        assert outcome.handle.name == "p/b"
        assert w.asked() == ["b"]

    virtual(test)


def test_an_open_circuit_is_skipped() -> None:
    async def test(w: World) -> None:
        breaker = w.handle("a").breaker
        for _ in range(5):
            breaker.record(Admission.CALL, failed=True)
        w.p.script("b", response())
        assert (await w.ask()).handle.name == "p/b"

    virtual(test)


def test_with_every_circuit_open_no_deployment_is_healthy() -> None:
    async def test(w: World) -> None:
        for upstream in "abc":
            for _ in range(5):
                w.handle(upstream).breaker.record(Admission.CALL, failed=True)
        with pytest.raises(NoHealthyDeployment) as raised:
            await w.ask()
        assert raised.value.code is grpc.StatusCode.UNAVAILABLE
        assert "every deployment of model 'm'" in raised.value.message
        assert w.asked() == []

    virtual(test)


def test_with_every_open_deployment_cooling_down_the_call_learns_the_shortest_wait() -> None:
    async def test(w: World) -> None:
        for _ in range(5):
            w.handle("a").breaker.record(Admission.CALL, failed=True)
        w.handle("b").cooldown.start(30)
        w.handle("c").cooldown.start(20)
        with pytest.raises(UpstreamRateLimited) as raised:
            await w.ask()
        assert raised.value.retry_after == pytest.approx(20, abs=0.5)
        assert "is rate-limited upstream; retry after 20" in raised.value.message
        assert w.asked() == []

    virtual(test)


def test_when_only_some_are_cooling_and_the_rest_open_the_circuits_are_blamed() -> None:
    async def test(w: World) -> None:
        w.handle("a").cooldown.start(30)
        for upstream in "bc":
            for _ in range(5):
                w.handle(upstream).breaker.record(Admission.CALL, failed=True)
        w.handle("b").cooldown.start(5)  # open and cooling: the circuit decides
        with pytest.raises(UpstreamRateLimited) as raised:
            await w.ask()
        assert raised.value.retry_after == pytest.approx(30, abs=0.5)

    virtual(test)


def test_after_a_key_refusal_that_deployment_is_not_asked_again() -> None:
    async def test(w: World) -> None:
        auth = UpstreamAuth("key refused")
        w.p.script("a", auth)
        w.p.script("b", UpstreamUnavailable("b"))
        w.p.script("c", UpstreamUnavailable("c"))
        w.p.script("b", UpstreamUnavailable("b again"), UpstreamUnavailable("b at last"))
        with pytest.raises(UpstreamUnavailable):
            await w.ask()
        assert w.asked() == ["a", "b", "c", "b", "b"]

    virtual(test)


def test_a_call_whose_only_deployment_refused_the_key_ends_with_that_refusal() -> None:
    async def test(w: World) -> None:
        auth = UpstreamAuth("key refused")
        w.p.script("s", auth)
        with pytest.raises(UpstreamAuth) as raised:
            await w.ask("solo")
        assert raised.value is auth
        assert w.asked() == ["s"]

    virtual(test)


def test_a_deployment_that_failed_and_then_refused_the_key_is_not_asked_again() -> None:
    async def test(w: World) -> None:
        auth = UpstreamAuth("key refused")
        w.p.script("s", UpstreamUnavailable("s"), auth, response())
        with pytest.raises(UpstreamAuth) as raised:
            await w.ask("solo")
        assert raised.value is auth
        assert w.asked() == ["s", "s"]

    virtual(test)


def test_a_deployment_this_call_met_a_429_from_is_asked_again_after_its_wait() -> None:
    async def test(w: World) -> None:
        w.p.script("s", UpstreamRateLimited("429", retry_after=1), response())
        outcome = await w.ask("solo")
        assert outcome.attempts == 2 and w.asked() == ["s", "s"]

    virtual(test)


# -- which deployments may take the request ------------------------------------------------

CAPPED = [
    {**MODELS[0], "max_output_tokens": 100},
    {**MODELS[1], "max_output_tokens": 200},
    *MODELS[2:],
]


def test_a_deployment_whose_model_caps_max_tokens_below_the_request_is_passed_over() -> None:
    async def test(w: World) -> None:
        w.p.script("c", response())
        await w.ask(request=ChatCompletionRequest(model="m", max_tokens=300))
        assert w.asked() == ["c"]
        w.p.script("b", response())
        await w.ask(request=ChatCompletionRequest(model="m", max_tokens=200))  # exactly b's
        assert w.asked()[-1] == "b"
        w.p.script("b", response())
        await w.ask(request=ChatCompletionRequest(model="m", max_tokens=150))  # under b's
        assert w.asked()[-1] == "b"
        w.p.script("a", response())
        await w.ask(request=ChatCompletionRequest(model="m"))  # no max_tokens: any
        assert w.asked()[-1] == "a"

    virtual(test, models=CAPPED)


def test_a_request_no_deployment_s_cap_allows_is_refused_naming_max_tokens() -> None:
    models = [{**model, "max_output_tokens": 100} for model in MODELS]

    async def test(w: World) -> None:
        with pytest.raises(InvalidRequest) as raised:
            await w.ask(request=ChatCompletionRequest(model="m", max_tokens=101))
        assert raised.value.field == "max_tokens"
        assert raised.value.description == "is 101; no deployment 'm' may use allows it"
        assert w.asked() == []

    virtual(test, models=models)


def refuse_tools(request: ChatCompletionRequest) -> InvalidRequest | None:
    return InvalidRequest("tools", "q cannot carry tools") if request.tools else None


TWO_PROVIDERS = [
    {"name": "m", "provider": "q", "upstream_model": "a", "fallbacks": ["f"]},
    {"name": "f", "provider": "p", "upstream_model": "b"},
]


def test_a_deployment_whose_provider_cannot_carry_the_request_is_passed_over() -> None:
    async def test(w: World) -> None:
        w.p.script("b", response())
        request = ChatCompletionRequest(model="m")
        request.tools.add(type="function").function.name = "f"
        assert (await w.ask(request=request)).handle.name == "p/b"
        w.providers["q"].script("a", response())
        assert (await w.ask()).handle.name == "q/a"

    virtual(
        test,
        models=TWO_PROVIDERS,
        providers=[Scripted(), Scripted("q", refuses_requests=True, refuses=refuse_tools)],
    )


def test_a_request_no_provider_can_carry_is_refused_with_the_first_reason() -> None:
    async def test(w: World) -> None:
        request = ChatCompletionRequest(model="m")
        request.tools.add(type="function").function.name = "f"
        with pytest.raises(InvalidRequest) as raised:
            await w.ask(request=request)
        assert raised.value.message == "tools: q cannot carry tools"

    refuses = [
        Scripted(refuses_requests=True, refuses=lambda r: InvalidRequest("tools", "p neither")),
        Scripted("q", refuses_requests=True, refuses=refuse_tools),
    ]
    virtual(test, models=TWO_PROVIDERS, providers=refuses)


# -- hedging -------------------------------------------------------------------------------

HEDGED = [{**MODELS[0], "hedge_after_ms": 100}, *MODELS[1:]]


def test_a_slow_first_deployment_is_raced_by_a_second_and_the_first_to_answer_wins() -> None:
    async def test(w: World) -> None:
        w.p.script("a", Wait(1.0, response("slow")))
        w.p.script("b", Wait(0.05, response("fast")))
        outcome = await w.ask()
        assert outcome.value.choices[0].message.content == "fast"
        assert (outcome.handle.name, outcome.attempts) == ("p/b", 2)
        at = w.times()
        assert at[1] - at[0] == pytest.approx(0.1)  # started after hedge_after_ms
        assert [(a.handle.name, a.error) for a in w.call.attempts] == [
            ("p/a", "CANCELLED"),
            ("p/b", None),
        ]
        assert w.call.served_by is w.call.attempts[1]

    virtual(test, models=HEDGED)


def test_a_first_deployment_that_answers_in_time_is_not_raced() -> None:
    async def test(w: World) -> None:
        w.p.script("a", Wait(0.09, response()))
        outcome = await w.ask()
        assert (outcome.handle.name, outcome.attempts) == ("p/a", 1)
        assert w.asked() == ["a"]
        assert w.call.served_by is w.call.attempts[0]

    virtual(test, models=HEDGED)


def test_the_first_racer_may_still_win() -> None:
    async def test(w: World) -> None:
        w.p.script("a", Wait(0.2, response("first")))
        w.p.script("b", Wait(1.0, response("second")))
        outcome = await w.ask()
        assert outcome.value.choices[0].message.content == "first"
        assert (outcome.handle.name, outcome.attempts) == ("p/a", 2)

    virtual(test, models=HEDGED)


def test_a_racer_that_fails_leaves_the_other_to_answer() -> None:
    async def test(w: World) -> None:
        w.p.script("a", Wait(0.5, response("first")))
        w.p.script("b", UpstreamUnavailable("b"))
        outcome = await w.ask()
        assert outcome.value.choices[0].message.content == "first"
        assert outcome.attempts == 2

    virtual(test, models=HEDGED)


def test_when_both_racers_fail_the_call_goes_on_with_the_attempts_they_spent() -> None:
    async def test(w: World) -> None:
        w.p.script("a", Wait(0.5, UpstreamUnavailable("a")))
        w.p.script("b", UpstreamTimeout("b"))
        w.p.script("c", Wait(0.01, response("third")))
        outcome = await w.ask()
        assert (outcome.handle.name, outcome.attempts) == ("p/c", 3)
        assert w.asked() == ["a", "b", "c"]

    virtual(test, models=HEDGED, retries={"max_attempts": 4})


def test_the_last_attempt_is_not_hedged() -> None:
    async def test(w: World) -> None:
        w.p.script("a", Wait(0.5, UpstreamUnavailable("a")))
        w.p.script("b", UpstreamUnavailable("b"))
        w.p.script("c", Wait(1.0, response("third")))
        outcome = await w.ask()
        assert (outcome.handle.name, outcome.attempts) == ("p/c", 3)
        assert w.asked() == ["a", "b", "c"]  # no racer beside c

    virtual(test, models=HEDGED, retries={"max_attempts": 3})


#: Hundreds of attempts on one deployment, without waits, a retry budget or a breaker in
#: the way: counts above 256 are distinct objects in Python, compared by value only.
MANY = {
    "retries": {"max_attempts": 300, "backoff_base_ms": 0, "budget_min_per_second": 100},
    "circuit_breaker": {"consecutive_failures": 1000, "min_calls": 1000},
}


def test_a_call_makes_exactly_its_attempts_however_many() -> None:
    async def test(w: World) -> None:
        w.p.script("s", *[UpstreamUnavailable("s")] * 300, response())
        with pytest.raises(UpstreamUnavailable):
            await w.ask("solo")
        assert len(w.asked()) == 300

    virtual(test, **MANY)


def test_the_last_of_many_attempts_is_not_hedged() -> None:
    async def test(w: World) -> None:
        w.p.script("s", *[UpstreamUnavailable("s")] * 299, Wait(1.0, response()), response())
        outcome = await w.ask("solo")
        assert outcome.attempts == 300
        assert len(w.asked()) == 300  # no racer beside the last

    virtual(test, models=SOLO_HEDGED, **MANY)


def test_a_racer_s_final_failure_still_lets_the_other_answer() -> None:
    async def test(w: World) -> None:
        w.p.script("a", Wait(0.5, UpstreamInvalidRequest("a")))
        w.p.script("b", Wait(1.0, response()))
        assert (await w.ask()).handle.name == "p/b"

    virtual(test, models=HEDGED)


def test_when_both_racers_fail_the_last_failure_decides() -> None:
    async def test(w: World) -> None:
        w.p.script("a", Wait(0.5, UpstreamUnavailable("a")))
        w.p.script("b", Wait(0.6, UpstreamInvalidRequest("b")))
        w.p.script("c", response())
        with pytest.raises(UpstreamInvalidRequest):
            await w.ask()
        assert w.asked() == ["a", "b"]

    virtual(test, models=HEDGED)


def test_a_deployment_with_no_other_races_itself() -> None:
    solo = [*MODELS[:3], {**MODELS[3], "hedge_after_ms": 100}]

    async def test(w: World) -> None:
        w.p.script("s", Wait(1.0, response("first")), Wait(1.0, response("second")))
        outcome = await w.ask("solo")
        assert outcome.value.choices[0].message.content == "first"
        assert (outcome.handle.name, outcome.attempts) == ("p/s", 2)
        assert w.asked() == ["s", "s"]

    virtual(test, models=solo)


SOLO_HEDGED = [*MODELS[:3], {**MODELS[3], "hedge_after_ms": 100}]


def test_a_deployment_that_met_a_429_itself_may_race_itself_while_it_cools_down() -> None:
    async def test(w: World) -> None:
        w.p.script(
            "s",
            UpstreamRateLimited("429", retry_after=0.2),
            Wait(1.0, response("slow")),
            Wait(0.05, response("fast")),
        )
        outcome = await w.ask("solo")
        assert outcome.value.choices[0].message.content == "fast"
        assert outcome.attempts == 3 and w.asked() == ["s", "s", "s"]

    virtual(test, models=SOLO_HEDGED)


def test_a_hedge_that_finds_no_second_racer_ends_with_the_first_s_failure() -> None:
    async def test(w: World) -> None:
        # The only deployment is half-open with its one probe out: nothing to race.
        clock = ManualClock()
        handle = w.handle("s")
        handle.breaker = CircuitBreaker(
            "p/s",
            CircuitBreakerSettings(consecutive_failures=1, open_seconds=5, half_open_probes=1),
            clock=clock,
        )
        handle.breaker.record(Admission.CALL, failed=True)
        clock.now += 5
        failure = UpstreamUnavailable("s")
        w.p.script("s", Wait(0.5, failure))
        with pytest.raises(UpstreamUnavailable) as raised:
            await w.ask("solo")
        assert raised.value is failure
        assert w.asked() == ["s"]

    virtual(test, models=SOLO_HEDGED, retries={"max_attempts": 2})


def test_hedging_is_logged_naming_both_deployments(caplog: pytest.LogCaptureFixture) -> None:
    async def test(w: World) -> None:
        w.p.script("a", Wait(1.0, response("slow")))
        w.p.script("b", response("fast"))
        with caplog.at_level(logging.INFO, logger="ai_service.pipeline.dispatch"):
            await w.ask()
        (hedging,) = [r for r in caplog.records if r.getMessage() == "hedging"]
        assert (hedging.slow, hedging.second) == ("p/a", "p/b")  # type: ignore[attr-defined]

    virtual(test, models=HEDGED)


def test_a_hedge_needs_no_call_record() -> None:
    async def test(w: World) -> None:
        current_call.set(None)  # type: ignore[arg-type]
        w.p.script("a", Wait(1.0, response("slow")))
        w.p.script("b", response("fast"))
        assert (await w.ask()).handle.name == "p/b"

    virtual(test, models=HEDGED)


def test_racers_that_both_answer_are_served_by_the_one_the_dispatcher_chose() -> None:
    async def test(w: World) -> None:
        # Both answer at the same moment (times exact in binary).
        w.p.script("a", Wait(0.25, response("a")))
        w.p.script("b", Wait(0.125, response("b")))
        outcome = await w.ask()
        served = w.call.served_by
        assert served is not None and served.handle is outcome.handle
        assert outcome.value.choices[0].message.content == outcome.handle.target.upstream_model

    virtual(test, models=[{**MODELS[0], "hedge_after_ms": 125}, *MODELS[1:]])


def test_a_losing_stream_that_opened_too_is_closed() -> None:
    async def test(w: World) -> None:
        # Both open at the same moment (times exact in binary): one wins, one is discarded.
        w.p.script("a", Wait(0.25, [chunk("a"), chunk(finish="stop")]))
        w.p.script("b", Wait(0.125, [chunk("b"), chunk(finish="stop")]))
        request = ChatCompletionRequest(model="m")
        budget = Budget(time.monotonic() + 60)
        outcome = await w.dispatcher.dispatch_stream(request, w.route("m"), budget)
        first, rest = outcome.value
        assert first.choices[0].delta.content == outcome.handle.target.upstream_model
        assert w.p.open_streams == 1  # the winner's
        await rest.aclose()
        assert w.p.open_streams == 0

    virtual(test, models=[{**MODELS[0], "hedge_after_ms": 125}, *MODELS[1:]])


def test_a_stream_the_hedge_opened_as_the_caller_left_is_closed() -> None:
    async def test(w: World) -> None:
        # The second racer opens its stream in the very turn the caller is cancelled: no
        # winner was chosen, and both racers are settled; the first is cancelled first.
        w.p.script("a", Wait(1, [chunk("a"), chunk(finish="stop")]))
        w.p.script("b", Do(lambda: caller.cancel(), [chunk("b"), chunk(finish="stop")]))
        request = ChatCompletionRequest(model="m")
        budget = Budget(time.monotonic() + 60)
        caller = asyncio.ensure_future(w.dispatcher.dispatch_stream(request, w.route("m"), budget))
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert w.asked() == ["a", "b"]
        assert w.p.open_streams == 0

    virtual(test, models=[{**MODELS[0], "hedge_after_ms": 125}, *MODELS[1:]])


# -- streams -------------------------------------------------------------------------------


async def open_stream(w: World, model: str = "m") -> tuple[Any, list[ChatCompletionChunk]]:
    request = ChatCompletionRequest(model=model)
    outcome = await w.dispatcher.dispatch_stream(
        request, w.route(model), Budget(time.monotonic() + 60)
    )
    first, rest = outcome.value
    return outcome, [first, *[piece async for piece in rest]]


def test_a_stream_begins_with_its_first_chunk_named_by_its_deployment() -> None:
    async def test(w: World) -> None:
        w.p.script("a", [chunk("Hel", role="assistant"), chunk("lo"), chunk(finish="stop")])
        outcome, pieces = await open_stream(w)
        assert (outcome.handle.name, outcome.attempts) == ("p/a", 1)
        assert [p.choices[0].delta.content for p in pieces] == ["Hel", "lo", ""]
        assert all(p.deployment == "p/a" and p.provider == "p" for p in pieces)

    virtual(test)


def test_a_role_only_opening_is_merged_into_the_next_chunk() -> None:
    async def test(w: World) -> None:
        w.p.script("a", [chunk(role="assistant"), chunk("Hi"), chunk(finish="stop")])
        _, pieces = await open_stream(w)
        assert pieces[0].choices[0].delta.role == "assistant"
        assert pieces[0].choices[0].delta.content == "Hi"
        assert len(pieces) == 2

    virtual(test)


def test_a_chunk_after_the_role_keeps_its_own_role() -> None:
    async def test(w: World) -> None:
        w.p.script("a", [chunk(role="assistant"), chunk("Hi", role="tool"), chunk(finish="stop")])
        _, pieces = await open_stream(w)
        assert pieces[0].choices[0].delta.role == "tool"

    virtual(test)


def test_a_stream_that_fails_right_after_its_role_fails_over() -> None:
    async def test(w: World) -> None:
        w.p.script("a", [chunk(role="assistant"), UpstreamUnavailable("overloaded")])
        w.p.script("b", [chunk("fine"), chunk(finish="stop")])
        outcome, pieces = await open_stream(w)
        assert (outcome.handle.name, outcome.attempts) == ("p/b", 2)
        assert pieces[0].choices[0].delta.content == "fine"
        assert w.p.open_streams == 0

    virtual(test)


def test_a_stream_that_opens_with_reasoning_opens_with_it() -> None:
    async def test(w: World) -> None:
        thinking = chunk(role="assistant")
        thinking.choices[0].delta.reasoning.add(text="let me think")
        w.p.script("a", [thinking, chunk("answer"), chunk(finish="stop")])
        _, pieces = await open_stream(w)
        assert pieces[0].choices[0].delta.reasoning[0].text == "let me think"
        assert [p.choices[0].delta.content for p in pieces] == ["", "answer", ""]

    virtual(test)


def test_a_stream_of_only_its_role_is_complete() -> None:
    async def test(w: World) -> None:
        w.p.script("a", [chunk(role="assistant")])
        outcome, pieces = await open_stream(w)
        assert outcome.handle.name == "p/a" and len(pieces) == 1

    virtual(test)


@pytest.mark.parametrize(
    "opening",
    [chunk(finish="stop"), chunk("x"), ChatCompletionChunk(usage=Usage(prompt_tokens=1))],
)
def test_an_opening_with_content_finish_or_usage_is_not_role_only(
    opening: ChatCompletionChunk,
) -> None:
    async def test(w: World) -> None:
        w.p.script("a", [opening, UpstreamUnavailable("after the first chunk")])
        outcome = await w.dispatcher.dispatch_stream(
            ChatCompletionRequest(model="m"), w.route("m"), Budget(time.monotonic() + 60)
        )
        assert outcome.handle.name == "p/a"  # the failure is the servicer's now
        with pytest.raises(UpstreamUnavailable):
            await anext(outcome.value[1])

    virtual(test)


def test_a_stream_that_ends_before_any_chunk_fails_over() -> None:
    async def test(w: World) -> None:
        w.p.script("a", [])
        w.p.script("b", [chunk("b")])
        outcome, _ = await open_stream(w)
        assert outcome.handle.name == "p/b"
        assert w.call.attempts[0].error == "UPSTREAM_UNAVAILABLE"

    virtual(test)


# -- embeddings ----------------------------------------------------------------------------


def test_an_embed_call_goes_to_the_first_deployment_that_embeds() -> None:
    models = [
        {"name": "e", "provider": "q", "upstream_model": "x", "fallbacks": ["e2"]},
        {
            "name": "e2",
            "provider": "p",
            "upstream_model": "y",
            "capabilities": {"embeddings": True},
        },
    ]

    async def test(w: World) -> None:
        w.p.script("y", EmbedResponse(model="y"))
        route = w.route("e")
        outcome = await w.dispatcher.dispatch_embed(
            EmbedRequest(model="e"), route, Budget(time.monotonic() + 60)
        )
        assert (outcome.handle.name, outcome.value.deployment) == ("p/y", "p/y")

    virtual(test, models=models, providers=[Scripted(), Scripted("q")])


def test_an_embed_call_to_a_provider_without_embeddings_says_so() -> None:
    models = [{"name": "e", "provider": "q", "upstream_model": "x"}]

    async def test(w: World) -> None:
        with pytest.raises(InvalidRequest) as raised:
            await w.dispatcher.dispatch_embed(
                EmbedRequest(model="e"), w.route("e"), Budget(time.monotonic() + 60)
            )
        assert raised.value.field == "model"
        assert raised.value.description == (
            "model 'e' is served by anthropic, which has no embeddings API"
        )

    without = frozenset(CAPABILITIES) - {"embeddings"}
    virtual(test, models=models, providers=[Scripted("q", kind="anthropic", carries=without)])


def test_an_embed_call_to_a_chat_model_says_it_is_not_an_embedding_model() -> None:
    models = [{"name": "e", "provider": "p", "upstream_model": "x"}]

    async def test(w: World) -> None:
        with pytest.raises(InvalidRequest) as raised:
            await w.dispatcher.dispatch_embed(
                EmbedRequest(model="e"), w.route("e"), Budget(time.monotonic() + 60)
            )
        assert raised.value.description == ("model 'e' is not an embedding model (see ListModels)")

    virtual(test, models=models)


# -- one attempt: the breaker, the slot, the cool-down, the record -------------------------


def handle_on(
    provider: Scripted, clock: ManualClock, in_flight: int = 1, queue: int = 0, **breaker: Any
) -> DeploymentHandle:
    settings = CircuitBreakerSettings.model_validate({"consecutive_failures": 1, **breaker})
    return DeploymentHandle(
        Deployment("p", "s"),
        provider,  # type: ignore[arg-type]
        CircuitBreaker("p/s", settings, clock=clock),
        ConcurrencyLimiter("p/s", in_flight, queue),
    )


def attempt_in_virtual_time(
    test: Callable[[ManualClock], Coroutine[Any, Any, None]], clock: ManualClock | None = None
) -> None:
    async def main(clock: ManualClock) -> None:
        current_call.set(CallRecord((), "id", "ChatCompletion", streaming=False))
        await test(clock)

    in_virtual_time(main, clock)


def near_zero() -> ManualClock:
    """A loop clock to give the call's budget, which is also the stopwatch of upstream
    time, so a test knows to the second what an attempt waited. It starts near 0, as a
    monotonic clock does on a machine just booted: a difference taken the wrong way
    then shows."""
    return ManualClock(now=1.0)


@pytest.mark.parametrize(
    ("error", "opens"),
    [
        (UpstreamUnavailable("x"), True),
        (UpstreamTimeout("x"), True),
        (UpstreamAuth("x"), True),
        (UpstreamInvalidRequest("x"), False),
        (UpstreamRateLimited("x", retry_after=None), False),
    ],
)
def test_an_attempt_reports_its_failure_to_the_breaker_as_it_deserves(
    error: GatewayError, opens: bool
) -> None:
    async def test(clock: ManualClock) -> None:
        provider = Scripted()
        handle = handle_on(provider, clock)
        provider.script("s", error)
        with pytest.raises(type(error)):
            await guarded_complete(handle, Admission.CALL, ChatCompletionRequest(), far())
        assert (handle.breaker.state is CircuitState.OPEN) is opens
        assert handle.limiter.in_flight == 0
        assert handle.cooldown.remaining() == 0

    attempt_in_virtual_time(test)


def test_a_429_with_a_retry_after_cools_the_deployment_down() -> None:
    async def test(clock: ManualClock) -> None:
        provider = Scripted()
        handle = handle_on(provider, clock)
        provider.script("s", UpstreamRateLimited("x", retry_after=3))
        with pytest.raises(UpstreamRateLimited):
            await guarded_complete(handle, Admission.CALL, ChatCompletionRequest(), far())
        assert 2 < handle.cooldown.remaining() <= 3

    attempt_in_virtual_time(test)


def far(clock: Callable[[], float] = time.monotonic) -> Budget:
    return Budget(clock() + 60, clock)


def test_an_attempt_records_what_it_sent_and_what_came_back() -> None:
    async def test(clock: ManualClock) -> None:
        provider = Scripted()
        handle = handle_on(provider, clock)
        answer = response()
        answer.usage.prompt_tokens, answer.usage.completion_tokens = 7, 3
        provider.script("s", answer)
        before = time.perf_counter()
        got = await guarded_complete(handle, Admission.CALL, ChatCompletionRequest(), far(), 77)
        spent = time.perf_counter() - before
        assert (got.provider, got.deployment) == ("p", "p/s")
        assert provider.calls[0][2] == 77
        record = current_call.get().attempts[0]
        assert record.sent and record.error is None
        assert (record.input_tokens, record.output_tokens) == (7, 3)
        assert record.response_model == "upstream-model"
        assert 0 < record.upstream_seconds <= spent  # a part of the call, measured

    attempt_in_virtual_time(test)


def test_an_attempt_waits_for_a_slot_and_one_that_gets_none_frees_its_probe() -> None:
    async def test(clock: ManualClock) -> None:
        provider = Scripted()
        handle = handle_on(provider, clock, in_flight=1, queue=1, half_open_probes=1)
        assert handle.limiter.try_acquire()  # the one slot is taken
        provider.script("s", response())
        waiting = asyncio.ensure_future(
            guarded_complete(handle, Admission.CALL, ChatCompletionRequest(), far())
        )
        await asyncio.sleep(1)
        assert not waiting.done() and not current_call.get().attempts[0].sent
        handle.limiter.release()
        await waiting
        assert handle.limiter.in_flight == 0

        # A probe that never gets a slot gives its probe back: another may go.
        handle.breaker.record(Admission.CALL, failed=True)
        clock.now += 60
        probe = handle.breaker.admit()
        assert probe is Admission.PROBE and not handle.breaker.allows()
        assert handle.limiter.try_acquire()
        with pytest.raises(DeploymentBusy):
            await guarded_complete(
                handle, probe, ChatCompletionRequest(), Budget(time.monotonic() + 0.5)
            )
        assert handle.breaker.allows()
        assert handle.breaker.state is CircuitState.HALF_OPEN

    attempt_in_virtual_time(test)


def test_a_probe_stream_closes_the_circuit_at_its_first_answer() -> None:
    async def test(clock: ManualClock) -> None:
        provider = Scripted()
        handle = handle_on(provider, clock, open_seconds=5)
        handle.breaker.record(Admission.CALL, failed=True)
        clock.now += 5
        probe = handle.breaker.admit()
        assert probe is Admission.PROBE
        provider.script("s", [chunk(role="assistant"), chunk("Hi"), Wait(1, chunk(finish="stop"))])
        stream = guarded_stream(handle, probe, ChatCompletionRequest(), far())
        await anext(stream)  # the role alone promises nothing
        assert handle.breaker.state is CircuitState.HALF_OPEN
        await anext(stream)
        assert handle.breaker.state is CircuitState.CLOSED  # while the stream goes on
        rest = [piece async for piece in stream]
        assert rest[-1].choices[0].finish_reason == "stop"
        assert handle.breaker.state is CircuitState.CLOSED
        assert handle.limiter.in_flight == 0

    attempt_in_virtual_time(test)


def test_a_stream_s_failure_after_it_answered_counts_as_an_ordinary_call_s() -> None:
    async def test(clock: ManualClock) -> None:
        provider = Scripted()
        handle = handle_on(provider, clock, open_seconds=5)
        handle.breaker.record(Admission.CALL, failed=True)
        clock.now += 5
        probe = handle.breaker.admit()
        assert probe is Admission.PROBE
        provider.script("s", [chunk("Hi"), UpstreamUnavailable("cut")])
        stream = guarded_stream(handle, probe, ChatCompletionRequest(), far())
        await anext(stream)
        with pytest.raises(UpstreamUnavailable):
            await anext(stream)
        assert handle.breaker.state is CircuitState.OPEN  # one failure opens it (setting 1)

    attempt_in_virtual_time(test)


def test_a_stream_records_its_usage_and_its_upstream_time() -> None:
    async def test(clock: ManualClock) -> None:
        provider = Scripted()
        handle = handle_on(provider, clock)
        last = chunk(finish="stop")
        last.usage.prompt_tokens, last.usage.completion_tokens = 5, 2
        provider.script("s", [chunk("Hi"), last])
        before = time.perf_counter()
        pieces = [
            p async for p in guarded_stream(handle, Admission.CALL, ChatCompletionRequest(), far())
        ]
        spent = time.perf_counter() - before
        assert all(p.deployment == "p/s" for p in pieces)
        record = current_call.get().attempts[0]
        assert record.sent and (record.input_tokens, record.output_tokens) == (5, 2)
        assert record.error is None
        assert 0 < record.upstream_seconds <= spent

    attempt_in_virtual_time(test)


def test_a_unary_attempt_s_upstream_time_is_its_wait_for_the_answer() -> None:
    async def test(clock: ManualClock) -> None:
        provider = Scripted()
        handle = handle_on(provider, clock)
        provider.script("s", Wait(3, response()))
        await guarded_complete(handle, Admission.CALL, ChatCompletionRequest(), far(clock))
        assert current_call.get().attempts[0].upstream_seconds == 3

    attempt_in_virtual_time(test, near_zero())


def test_a_stream_s_upstream_time_counts_its_waits_and_not_the_caller_s() -> None:
    async def test(clock: ManualClock) -> None:
        provider = Scripted()
        handle = handle_on(provider, clock)
        provider.script("s", [Wait(2, chunk("Hi")), Wait(20, UpstreamUnavailable("cut"))])
        stream = guarded_stream(handle, Admission.CALL, ChatCompletionRequest(), far(clock))
        await anext(stream)
        await asyncio.sleep(10)  # the caller holds the chunk
        with pytest.raises(UpstreamUnavailable):
            await anext(stream)
        # The wait for the first chunk and the wait for the failure that ended the stream.
        assert current_call.get().attempts[0].upstream_seconds == 2 + 20

    attempt_in_virtual_time(test, near_zero())


def test_a_stream_that_fails_before_its_first_chunk_counts_the_wait_for_the_failure() -> None:
    async def test(clock: ManualClock) -> None:
        provider = Scripted()
        handle = handle_on(provider, clock)
        provider.script("s", Wait(5, []))  # the stream ends, with nothing, after 5 s
        with pytest.raises(UpstreamUnavailable):
            await anext(guarded_stream(handle, Admission.CALL, ChatCompletionRequest(), far(clock)))
        assert current_call.get().attempts[0].upstream_seconds == 5

    attempt_in_virtual_time(test, near_zero())


def test_a_stream_closed_while_the_caller_holds_a_chunk_counts_only_the_upstream_wait() -> None:
    async def test(clock: ManualClock) -> None:
        provider = Scripted()
        handle = handle_on(provider, clock)
        provider.script("s", [Wait(2, chunk("Hi")), chunk("more")])
        stream = guarded_stream(handle, Admission.CALL, ChatCompletionRequest(), far(clock))
        await anext(stream)
        await asyncio.sleep(10)
        await stream.aclose()
        assert current_call.get().attempts[0].upstream_seconds == 2

    attempt_in_virtual_time(test, near_zero())


def test_a_cancelled_stream_leaves_no_verdict_and_frees_its_slot() -> None:
    async def test(clock: ManualClock) -> None:
        provider = Scripted()
        handle = handle_on(provider, clock, open_seconds=5)
        handle.breaker.record(Admission.CALL, failed=True)
        clock.now += 5
        probe = handle.breaker.admit()
        assert probe is Admission.PROBE
        provider.script("s", [chunk(role="assistant"), Wait(5, chunk("late"))])
        stream = guarded_stream(handle, probe, ChatCompletionRequest(), far())
        await anext(stream)
        await stream.aclose()
        assert handle.breaker.allows()  # the probe was given back
        assert handle.limiter.in_flight == 0
        assert current_call.get().attempts[0].error == "CANCELLED"

    attempt_in_virtual_time(test)
