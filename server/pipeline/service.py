"""The AIService servicer: validate, route, dispatch, translate the outcome.

Every failure leaves through `errors.abort`, so callers see the status codes and
details docs/errors.md lists and nothing internal. A stream has a
defined ending: gap-free sequence numbers, finish_reason and usage on the last
chunk and in the trailing metadata, and a failure after chunks were delivered
ends UNAVAILABLE saying how many: never a silent truncation that looks like
success, never a duplicated prefix (a stream only fails over before its first
chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from ai_service.calls.record import current_call, request_id_metadata
from ai_service.config import GatewayConfig, RequestLimits
from ai_service.errors import GatewayError, Internal, StreamInterrupted, abort
from ai_service.identity.callers import current_caller
from ai_service.pipeline.answers import Answers
from ai_service.pipeline.drain import Drain
from ai_service.pipeline.usage import UsageReports
from ai_service.policy.redaction import RedactionPolicy, Screening
from ai_service.policy.reflection import ReflectionGuard, scrub_answer
from ai_service.policy.streams import OpenStreams
from ai_service.policy.validation import (
    MAX_MODEL_CHARS,
    apply_caller_cap,
    validate_embed,
    validate_for_model,
    validate_request,
)
from ai_service.providers.content import part_summaries
from ai_service.providers.translation import carries_output, text_length
from ai_service.resilience import Budget
from ai_service.routing.router import DeploymentHandle, ModelRoute, Router
from ai_service.timers import Timers
from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Cost,
    EmbedRequest,
    EmbedResponse,
    GetUsageRequest,
    GetUsageResponse,
    ListModelsRequest,
    ListModelsResponse,
    Model,
)

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

# Trailing metadata keys: the outcome of the call, for clients that want it.
ATTEMPTS_KEY = "x-ai-attempts"
DEPLOYMENT_KEY = "x-ai-deployment"
FINISH_REASON_KEY = "x-ai-finish-reason"
USAGE_KEY = "x-ai-usage"
#: What the call cost: `amount=…,currency=…` (and `estimated=1`, `unpriced=1`).
COST_KEY = "x-ai-cost"
#: Which process served the call (several share a port with `--workers`).
WORKER_KEY = "x-ai-worker"
_WORKER = str(os.getpid())


@dataclass(frozen=True, slots=True)
class ServiceState:
    """Everything a call reads from configuration, swapped whole on a reload."""

    limits: RequestLimits
    default_deadline: float
    router: Router
    answers: Answers
    policy: RedactionPolicy
    usage: UsageReports
    #: The deadlines of calls, on the serving loop's shared timer: a state serves the
    #: calls of the loop it was built on.
    timers: Timers

    @classmethod
    def build(
        cls, config: GatewayConfig, router: Router, answers: Answers, usage: UsageReports
    ) -> ServiceState:
        """Called on the serving loop (at start and on a reload)."""
        audit = config.observability.audit
        return cls(
            limits=config.limits,
            default_deadline=config.server.default_deadline_seconds,
            router=router,
            answers=answers,
            policy=RedactionPolicy(
                config.redaction, keep_text=audit.path is not None and audit.include_prompts
            ),
            usage=usage,
            timers=Timers.of(asyncio.get_running_loop()),
        )


class AIService(ai_service_pb2_grpc.AIServiceServicer):  # type: ignore[misc]
    def __init__(self, state: ServiceState) -> None:
        self.state = state  # each call reads it once: a reload never mixes two configs
        self._streams = OpenStreams()
        self._drain = Drain()

    def end_streams(self) -> None:
        """The drain's grace is about to end: every stream still running ends now, with
        DRAINING or STREAM_INTERRUPTED (see drain.py), rather than cut by gRPC."""
        self._drain.end_streams()

    @staticmethod
    async def _admit(
        state: ServiceState, request: ChatCompletionRequest
    ) -> tuple[ModelRoute, Screening]:
        """Everything that can refuse a call before it costs an upstream request; redaction."""
        call = current_call.get()
        if call is not None:
            call.model_requested = request.model[:MAX_MODEL_CHARS]  # before it is validated
        validate_request(request, state.limits)
        caller = current_caller.get()
        route = state.router.resolve(request.model, caller)
        route = state.router.apply_rules(route, request, caller)
        validate_for_model(request, route.model)
        apply_caller_cap(request, caller.name, caller.max_output_tokens, route.model)
        if call is not None:
            call.route = route
            if any(message.parts for message in request.messages):
                call.parts = part_summaries(request)
        # Every model that may serve the call binds it, its fallbacks' too.
        reachable = [model.name for model in state.router.reachable(route)]
        screening = state.policy.screening(caller.name, reachable, call)
        await screening.prompt(request)
        return route, screening

    async def ChatCompletion(
        self, request: ChatCompletionRequest, context: Context
    ) -> ChatCompletionResponse:
        state = self.state
        try:
            route, screening = await self._admit(state, request)
            budget = Budget.for_call(context.time_remaining(), state.default_deadline)
            with budget.bound(state.timers):
                outcome = await state.answers.answer(request, route, budget, current_caller.get())
        except GatewayError as error:
            await abort(context, error, request_id_metadata())
        except Exception:
            log.exception("ChatCompletion failed unexpectedly")
            await abort(context, Internal("internal error in the gateway"), request_id_metadata())
        response: ChatCompletionResponse = outcome.value
        scrub_answer(response)
        await screening.answer(response)
        trailers = _outcome_metadata(outcome.handle, outcome.attempts)
        context.set_trailing_metadata((*trailers, *_cost_metadata(response.cost)))
        return response

    async def StreamChatCompletion(
        self, request: ChatCompletionRequest, context: Context
    ) -> AsyncIterator[ChatCompletionChunk]:
        delivered = 0
        chars = 0
        call = current_call.get()
        state = self.state
        try:
            with self._streams.hold(current_caller.get()), self._drain.hold() as held:
                route, screening = await self._admit(state, request)
                budget = Budget.for_call(context.time_remaining(), state.default_deadline)
                # The budget (and the end of a drain) bounds the waits on the upstream,
                # never a `yield`: cancelled while grpc.aio writes a chunk, the call would
                # end with no status at all.
                with budget.bound(state.timers), held:
                    outcome = await state.answers.answer_stream(
                        request, route, budget, current_caller.get()
                    )
                first, rest = outcome.value
                # Time to first token: when the first chunk with some of the answer is
                # ready for the caller (past the policy), for the streams that have one.
                awaiting_output = call is not None
                chunk: ChatCompletionChunk | None = first
                guard = ReflectionGuard()
                async with contextlib.aclosing(rest):
                    while chunk is not None:
                        guard.chunk(chunk)
                        await screening.chunk(chunk)
                        chunk.sequence = delivered
                        if awaiting_output and call is not None and carries_output(chunk):
                            awaiting_output = False
                            call.saw_first_token()
                        yield chunk
                        delivered += 1
                        chars += text_length(chunk)
                        last = chunk
                        with budget.bound(state.timers), held:
                            chunk = await anext(rest, None)
                await screening.stream_ended()
                trailers = _outcome_metadata(outcome.handle, outcome.attempts)
                ending = (*_ending_metadata(last), *_cost_metadata(last.cost))
                context.set_trailing_metadata((*trailers, *ending))
        except GatewayError as error:
            if delivered:
                error = StreamInterrupted(error, chunks_delivered=delivered, chars_delivered=chars)
            await abort(context, error, request_id_metadata())
        except Exception:
            log.exception("StreamChatCompletion failed unexpectedly")
            await abort(context, Internal("internal error in the gateway"), request_id_metadata())
        finally:  # however the stream ended: what its caller got, for the call's record
            if call is not None:
                call.chunks_delivered, call.chars_delivered = delivered, chars

    async def Embed(self, request: EmbedRequest, context: Context) -> EmbedResponse:
        state = self.state
        call = current_call.get()
        try:
            if call is not None:
                call.model_requested = request.model[:MAX_MODEL_CHARS]
            validate_embed(request, state.limits)
            caller = current_caller.get()
            route = state.router.resolve(request.model, caller)
            if call is not None:
                call.route = route
            # Redaction binds the inputs as it binds a chat prompt: they go upstream too.
            reachable = [model.name for model in state.router.reachable(route)]
            await state.policy.screening(caller.name, reachable, call).prompt(request)
            budget = Budget.for_call(context.time_remaining(), state.default_deadline)
            with budget.bound(state.timers):
                outcome = await state.answers.embed(request, route, budget, caller)
        except GatewayError as error:
            await abort(context, error, request_id_metadata())
        except Exception:
            log.exception("Embed failed unexpectedly")
            await abort(context, Internal("internal error in the gateway"), request_id_metadata())
        trailers = _outcome_metadata(outcome.handle, outcome.attempts)
        context.set_trailing_metadata((*trailers, *_cost_metadata(outcome.value.cost)))
        return outcome.value

    async def ListModels(self, request: ListModelsRequest, context: Context) -> ListModelsResponse:
        routes = self.state.router.visible_to(current_caller.get())
        return ListModelsResponse(
            models=[
                Model(
                    id=route.name,
                    provider=route.deployments[0].handle.provider.kind,
                    deployments=[d.handle.name for d in route.deployments],
                    capabilities=self.state.router.capabilities(route),
                )
                for route in routes
            ]
        )

    async def GetUsage(self, request: GetUsageRequest, context: Context) -> GetUsageResponse:
        try:
            return await self.state.usage.report(request, current_caller.get())
        except GatewayError as error:
            await abort(context, error, request_id_metadata())
            raise AssertionError("abort returned") from None


def _cost_metadata(cost: Cost) -> tuple[tuple[str, str], ...]:
    if not cost.currency:  # no cost was worked out (a stream that reported no usage)
        return ()
    text = f"amount={cost.amount:.9f}".rstrip("0").rstrip(".") + f",currency={cost.currency}"
    if cost.estimated:
        text += ",estimated=1"
    if cost.unpriced:
        text += ",unpriced=1"
    return ((COST_KEY, text),)


def _outcome_metadata(
    handle: DeploymentHandle | None, attempts: int
) -> tuple[tuple[str, str], ...]:
    served_by = handle.name if handle is not None else "cache"
    return ((DEPLOYMENT_KEY, served_by), (ATTEMPTS_KEY, str(attempts)), (WORKER_KEY, _WORKER))


def _ending_metadata(last: ChatCompletionChunk) -> tuple[tuple[str, str], ...]:
    finish = ",".join(choice.finish_reason for choice in last.choices if choice.finish_reason)
    usage = last.usage
    text = (
        f"prompt={usage.prompt_tokens},completion={usage.completion_tokens},"
        f"total={usage.total_tokens}"
    )
    # The details only when the provider reported any: a plain call's line is unchanged.
    for name, value in (
        ("cached", usage.cached_tokens),
        ("cache_write", usage.cache_write_tokens),
        ("reasoning", usage.reasoning_tokens),
    ):
        if value:
            text += f",{name}={value}"
    return ((FINISH_REASON_KEY, finish), (USAGE_KEY, text))
