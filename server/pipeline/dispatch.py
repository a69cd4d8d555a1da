"""Runs one call across the deployments that may serve it.

The router orders the candidates; this module walks them: each attempt holds a
concurrency slot and a circuit-breaker admission of its deployment, a failure
that another attempt may fix (5xx, reset, stall, 429, an overloaded or busy
deployment, a refused provider key) moves on — to the next deployment at once,
or back to one that already failed after an exponential backoff with full jitter
(or its `Retry-After`, when that fits in the deadline) — within the per-call
maximum and the process-wide retry budget. A 400 or 404 is final. With hedging
on, a second deployment is started when the first has not answered within the
model's `hedge_after_ms`, and whichever answers first wins; the other is cancelled.
An attempt's answer, and each chunk of its stream, names the deployment it came from.

Streams fail over the same way until their first chunk; after that a failure
belongs to the servicer, which ends the stream saying how much was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ai_service.calls.record import ObservedAttempt, back_off, current_call, queued, start_hedge
from ai_service.config import RetrySettings
from ai_service.errors import (
    GatewayError,
    InvalidRequest,
    NoHealthyDeployment,
    UpstreamAuth,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    quoted,
)
from ai_service.resilience import Admission, Budget, RetryBudget, backoff_delay
from ai_service.routing.capabilities import needs_of
from ai_service.routing.router import DeploymentHandle, ModelRoute, Router
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbedRequest,
    EmbedResponse,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
ChunkStream = AsyncGenerator[ChatCompletionChunk, None]


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    value: T
    handle: DeploymentHandle
    attempts: int


def counts_against_deployment(error: GatewayError) -> bool:
    """Failures that say something about the deployment's health (circuit breaker input)."""
    return isinstance(error, UpstreamUnavailable | UpstreamTimeout | UpstreamAuth)


def worth_another_attempt(error: GatewayError) -> bool:
    return error.retryable or isinstance(error, UpstreamAuth)


Attempt = Callable[[DeploymentHandle, Admission], Awaitable[T]]


class Dispatcher:
    def __init__(self, router: Router, settings: RetrySettings) -> None:
        self._router = router
        self._settings = settings
        self.retry_budget = RetryBudget(settings)

    async def dispatch(
        self, request: ChatCompletionRequest, route: ModelRoute, budget: Budget
    ) -> Outcome[ChatCompletionResponse]:
        def attempt(
            handle: DeploymentHandle, admission: Admission
        ) -> Awaitable[ChatCompletionResponse]:
            default = self._router.default_max_tokens(route, handle)
            # No coroutine of its own: the guarded attempt is awaited directly.
            return guarded_complete(handle, admission, request, budget, default)

        return await self._run(request, route, budget, attempt, discard=None)

    async def dispatch_stream(
        self, request: ChatCompletionRequest, route: ModelRoute, budget: Budget
    ) -> Outcome[tuple[ChatCompletionChunk, ChunkStream]]:
        """The first chunk and the rest of the stream, from the first deployment to answer."""

        async def attempt(
            handle: DeploymentHandle, admission: Admission
        ) -> tuple[ChatCompletionChunk, ChunkStream]:
            default = self._router.default_max_tokens(route, handle)
            stream = guarded_stream(handle, admission, request, budget, default)
            try:
                first = await anext(stream)  # an empty stream raises UpstreamUnavailable
                if _role_only(first):
                    # The role alone promises no answer: a failure right after it (an
                    # overload event after Anthropic's message_start) still fails over.
                    first = _with_role(first, await anext(stream, first))
            except BaseException:
                await stream.aclose()
                raise
            return first, stream

        async def discard(opened: tuple[ChatCompletionChunk, ChunkStream]) -> None:
            await opened[1].aclose()

        return await self._run(request, route, budget, attempt, discard)

    async def dispatch_embed(
        self, request: EmbedRequest, route: ModelRoute, budget: Budget
    ) -> Outcome[EmbedResponse]:
        """Embeddings from the first deployment to answer, among those that embed."""
        candidates = self._router.embedders(route)
        if not candidates:
            raise embed_refusal(request, route)

        def attempt(handle: DeploymentHandle, admission: Admission) -> Awaitable[EmbedResponse]:
            return guarded_unary(
                handle, admission, budget, lambda: handle.provider.embed(request, handle.target)
            )

        return await self._run(request, route, budget, attempt, None, candidates)

    async def _run(
        self,
        request: ChatCompletionRequest | EmbedRequest,
        route: ModelRoute,
        budget: Budget,
        attempt: Attempt[T],
        discard: Callable[[T], Awaitable[None]] | None,
        servable: list[DeploymentHandle] | None = None,
    ) -> Outcome[T]:
        """`servable`: the candidates, when the caller chose them (else `_servable`)."""
        candidates = servable
        if candidates is None:
            assert isinstance(request, ChatCompletionRequest)
            candidates = self._servable(route, request)
        self.retry_budget.record_call()
        failed: set[DeploymentHandle] = set()
        refused_key: set[DeploymentHandle] = set()
        last_error: GatewayError | None = None
        attempts = 0
        while attempts < self._settings.max_attempts:
            picked = _pick(candidates, failed, refused_key)
            if picked is None:
                raise last_error or _nothing_to_ask(request.model, candidates)
            handle, admission = picked
            if last_error is not None:
                await self._before_retry(last_error, handle in failed, attempts, budget, handle)
            attempts += 1
            # The deployments this round tried: `handle`, and a second one if hedged.
            tried = [handle]
            try:
                hedge = route.model.hedge_after_ms
                if hedge is not None and attempts < self._settings.max_attempts:
                    value, winner = await self._hedged(
                        tried,
                        admission,
                        hedge / 1000,
                        candidates,
                        failed,
                        refused_key,
                        attempt,
                        discard,
                    )
                    call = current_call.get()
                    if call is not None:
                        call.hedge_won(winner)
                    return Outcome(value, winner, attempts + len(tried) - 1)
                return Outcome(await attempt(handle, admission), handle, attempts)
            except GatewayError as error:
                # A lost hedge spent an attempt on each racer, and each of them failed.
                attempts += len(tried) - 1
                if not worth_another_attempt(error):
                    raise
                (refused_key if isinstance(error, UpstreamAuth) else failed).update(tried)
                last_error = error
                log.info(
                    "attempt failed",
                    extra={
                        "model": route.name,
                        "deployment": handle.name,
                        "reason": error.reason,
                        "attempt": attempts,
                    },
                )
        assert last_error is not None
        raise last_error

    def _servable(
        self, route: ModelRoute, request: ChatCompletionRequest
    ) -> list[DeploymentHandle]:
        """The candidates that can take `request`: their provider's API can (a model or its
        fallbacks may mix providers), and their model's cap allows its max_tokens (a
        fallback's may be lower). A request none can take is refused as the first cannot."""
        candidates = self._router.candidates(route)
        if not self._router.may_narrow(route):  # the usual case: nothing to ask
            return candidates
        wanted = request.max_tokens if request.HasField("max_tokens") else None
        needs = needs_of(request)
        servable = [
            handle
            for handle in candidates
            if self._router.refusal(route, handle, request, needs) is None
            and (wanted is None or _within(self._router.output_cap(route, handle), wanted))
        ]
        if servable or not candidates:
            return servable
        for handle in candidates:  # the first reason one cannot take it
            refusal = self._router.refusal(route, handle, request, needs)
            if refusal is not None:
                raise refusal
        raise InvalidRequest(
            "max_tokens", f"is {wanted}; no deployment {quoted(request.model)} may use allows it"
        )

    async def _before_retry(
        self,
        error: GatewayError,
        same_deployment: bool,
        retries: int,
        budget: Budget,
        handle: DeploymentHandle,
    ) -> None:
        """Spend from the retry budget and wait as the failure asks; or give up with it."""
        if not self.retry_budget.try_spend():
            log.warning("retry budget exhausted", extra={"deployment": handle.name})
            raise error
        delay = 0.0
        if same_deployment:
            retry_after = error.retry_after if isinstance(error, UpstreamRateLimited) else None
            delay = (
                retry_after if retry_after is not None else backoff_delay(retries, self._settings)
            )
        if delay >= budget.remaining():
            raise error  # waiting would outlive the call: the caller learns why now
        if delay > 0:
            await back_off(delay)

    async def _hedged(
        self,
        tried: list[DeploymentHandle],
        admission: Admission,
        delay: float,
        candidates: list[DeploymentHandle],
        failed: set[DeploymentHandle],
        refused_key: set[DeploymentHandle],
        attempt: Attempt[T],
        discard: Callable[[T], Awaitable[None]] | None,
    ) -> tuple[T, DeploymentHandle]:
        """Race a second deployment against a first (`tried[0]`) that is slow to answer;
        the second is added to `tried` when it starts."""
        handle = tried[0]
        racers: dict[asyncio.Task[T], DeploymentHandle] = {
            asyncio.ensure_future(attempt(handle, admission)): handle
        }
        winner: asyncio.Task[T] | None = None
        try:
            done, _ = await asyncio.wait(racers, timeout=delay)
            if not done:
                second = _pick(candidates, failed | {handle}, refused_key)
                if second is not None:
                    log.info("hedging", extra={"slow": handle.name, "second": second[0].name})
                    racers[start_hedge(attempt(*second))] = second[0]
                    tried.append(second[0])
            errors: list[BaseException] = []
            pending = set(racers)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = task.exception()
                    if error is None:
                        winner = task
                        return task.result(), racers[task]
                    errors.append(error)
            raise errors[-1]
        finally:
            await _settle_losers(racers, winner, discard)


def embed_refusal(request: EmbedRequest, route: ModelRoute) -> InvalidRequest:
    """Why no deployment of `route` may embed: said plainly for a provider with no
    embeddings API at all (Anthropic), else the model is not an embedding model."""
    kinds = {d.handle.provider.kind for d in route.deployments}
    if all("embeddings" not in d.handle.provider.carries for d in route.deployments):
        names = ", ".join(sorted(kinds))
        return InvalidRequest(
            "model",
            f"model {quoted(request.model)} is served by {names}, which has no embeddings API",
        )
    return InvalidRequest(
        "model", f"model {quoted(request.model)} is not an embedding model (see ListModels)"
    )


def _role_only(chunk: ChatCompletionChunk) -> bool:
    """A stream's opening chunk that carries nothing but the role."""
    return not chunk.HasField("usage") and all(
        not (
            choice.delta.content
            or choice.delta.tool_calls
            or choice.delta.reasoning
            or choice.finish_reason
        )
        for choice in chunk.choices
    )


def _with_role(opening: ChatCompletionChunk, chunk: ChatCompletionChunk) -> ChatCompletionChunk:
    """`chunk`, the one after a role-only `opening`, carrying the role in its stead."""
    roles = {choice.index: choice.delta.role for choice in opening.choices}
    for choice in chunk.choices:
        if not choice.delta.role:
            choice.delta.role = roles.get(choice.index, "")
    return chunk


async def _settle_losers(
    racers: dict[asyncio.Task[T], DeploymentHandle],
    winner: asyncio.Task[T] | None,
    discard: Callable[[T], Awaitable[None]] | None,
) -> None:
    """Cancel every racer but the winner; release what a late finisher opened."""
    losers = [task for task in racers if task is not winner]
    for task in losers:
        task.cancel()
    for task in losers:
        try:
            value = await task
        except BaseException:
            if not task.done():
                raise  # we were cancelled ourselves while waiting
            continue
        if discard is not None:
            await discard(value)


def _within(cap: int | None, wanted: int) -> bool:
    return cap is None or wanted <= cap


def _pick(
    candidates: list[DeploymentHandle],
    failed: set[DeploymentHandle],
    refused_key: set[DeploymentHandle],
) -> tuple[DeploymentHandle, Admission] | None:
    """The best deployment that admits a call: fresh ones first, then ones that failed.
    One cooling down after a 429 is skipped, unless this call met that 429 itself (it
    waits out the Retry-After before it asks again)."""
    pools: tuple[list[DeploymentHandle], ...] = (candidates,)  # the first attempt: all fresh
    if failed or refused_key:
        pools = (
            [c for c in candidates if c not in failed and c not in refused_key],
            [c for c in candidates if c in failed and c not in refused_key],
        )
    for pool in pools:
        for handle in pool:
            if handle.cooldown.remaining() and handle not in failed:
                continue
            admission = handle.breaker.admit()
            if admission is not None:
                return handle, admission
    return None


def _nothing_to_ask(model: str, candidates: list[DeploymentHandle]) -> GatewayError:
    """Why a call found no deployment to ask: every circuit open (what health says as
    NOT_SERVING), or those that admit calls cooling down after a 429 (for how long)."""
    cooling = [h.cooldown.remaining() for h in candidates if h.breaker.allows()]
    if cooling and all(cooling):
        wait = min(cooling)
        return UpstreamRateLimited(
            f"every deployment of model {quoted(model)} (and its fallbacks) that "
            f"could take the call is rate-limited upstream; retry after {wait:.2f}s",
            retry_after=wait,
        )
    return NoHealthyDeployment(
        f"every deployment of model {quoted(model)} (and its fallbacks) "
        f"has its circuit open; retry later"
    )


async def _wait_for_slot(handle: DeploymentHandle, admission: Admission, budget: Budget) -> None:
    """Wait for a concurrency slot on the deployment (`limiter.try_acquire()` found none
    free); a call that never gets one leaves no verdict."""
    try:
        with queued():
            await handle.limiter.acquire(budget)
    except BaseException:
        handle.breaker.abandon(admission)
        raise


class _Verdict:
    """Report how the attempt went to the breaker, and give its slot back; a 429 that
    says when to come back cools the deployment down until then.

    A class rather than a generator context manager: it is entered on every call.
    """

    __slots__ = ("_admission", "_handle")

    def __init__(self, handle: DeploymentHandle, admission: Admission) -> None:
        self._handle = handle
        self._admission = admission

    def __enter__(self) -> _Verdict:
        return self

    def answered(self) -> None:
        """A probe's stream has begun to answer: the deployment works, so its circuit
        closes now rather than when the stream (maybe minutes long) ends; the end of
        the stream is then recorded as an ordinary call's."""
        if self._admission is Admission.PROBE:
            self._handle.breaker.record(Admission.PROBE, failed=False)
            self._admission = Admission.CALL

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        breaker = self._handle.breaker
        try:
            if exc is None:
                breaker.record(self._admission, failed=False)
            elif isinstance(exc, GatewayError):
                breaker.record(self._admission, failed=counts_against_deployment(exc))
                if isinstance(exc, UpstreamRateLimited) and exc.retry_after:
                    self._handle.cooldown.start(exc.retry_after)
            else:  # cancelled: says nothing about the deployment
                breaker.abandon(self._admission)
        finally:
            self._handle.limiter.release()


def stamp(
    message: ChatCompletionResponse | ChatCompletionChunk | EmbedResponse, handle: DeploymentHandle
) -> None:
    """Name the deployment that served the answer (a cached answer keeps the first one)."""
    message.provider = handle.target.provider
    message.deployment = handle.name


async def guarded_complete(
    handle: DeploymentHandle,
    admission: Admission,
    request: ChatCompletionRequest,
    budget: Budget,
    default_max_tokens: int | None = None,
) -> ChatCompletionResponse:
    """One unary attempt, holding a concurrency slot and reporting to the breaker."""
    return await guarded_unary(
        handle,
        admission,
        budget,
        lambda: handle.provider.complete(request, handle.target, default_max_tokens),
    )


Answer = TypeVar("Answer", ChatCompletionResponse, EmbedResponse)


async def guarded_unary(
    handle: DeploymentHandle,
    admission: Admission,
    budget: Budget,
    send: Callable[[], Awaitable[Answer]],
) -> Answer:
    """One unary attempt of any kind (`send`), holding a concurrency slot and reporting
    to the breaker."""
    with ObservedAttempt(handle) as attempt:
        if not handle.limiter.try_acquire():  # usually free: no coroutine to wait in
            await _wait_for_slot(handle, admission, budget)
        if attempt is not None:
            attempt.sent = True
        clock = budget.clock
        started = clock()
        try:
            with _Verdict(handle, admission):
                response = await send()
        finally:
            if attempt is not None:
                attempt.upstream_seconds = clock() - started
        if attempt is not None:
            attempt.took_usage(response.usage, response.model)
        stamp(response, handle)
        return response


async def guarded_stream(
    handle: DeploymentHandle,
    admission: Admission,
    request: ChatCompletionRequest,
    budget: Budget,
    default_max_tokens: int | None = None,
) -> ChunkStream:
    """One streaming attempt; the slot is held until the stream ends or is closed."""
    with ObservedAttempt(handle) as attempt:
        if not handle.limiter.try_acquire():  # usually free: no coroutine to wait in
            await _wait_for_slot(handle, admission, budget)
        if attempt is not None:
            attempt.sent = True
        with _Verdict(handle, admission) as verdict:
            stream = handle.provider.stream(request, handle.target, default_max_tokens)
            async with contextlib.aclosing(stream) as chunks:
                clock = budget.clock
                waiting = clock()
                empty = True
                probing = admission is Admission.PROBE
                relaying = False
                try:
                    async for chunk in chunks:
                        if probing and not _role_only(chunk):  # the role alone promises nothing
                            verdict.answered()
                            probing = False
                        empty = False
                        stamp(chunk, handle)
                        if attempt is not None:
                            # Upstream time only: not the time chunks spend with the caller.
                            attempt.upstream_seconds += clock() - waiting
                            if chunk.HasField("usage"):
                                attempt.took_usage(chunk.usage, chunk.model)
                        relaying = True
                        yield chunk
                        relaying = False
                        waiting = clock()
                finally:  # the last wait: for the stream's end, or the failure that ended it
                    if attempt is not None and not relaying:
                        attempt.upstream_seconds += clock() - waiting
                if empty:  # a failure of the deployment: raised where the breaker sees it
                    raise UpstreamUnavailable(f"{handle.name} ended the stream before any chunk")
