"""The service itself, whichever door a call came in by: admit, answer, relay.

`ServiceCore` takes a request, its caller and the time the caller gives it, and returns
the answer (or the stream of chunks) with the facts a door reports beside it: the
deployment that served it, the attempts it took. Every refusal or failure leaves as a
`GatewayError` (an unexpected one as `Internal`, logged), which each door puts in its
own terms: gRPC's status and details (`service.py`), or an HTTP API's error (`doors/`).

A stream has a defined ending: gap-free sequence numbers, finish_reason and usage on the
last chunk (and in the `StreamEnding` its door reports), and a failure after chunks
were delivered is STREAM_INTERRUPTED saying how many: never a silent truncation that
looks like success, never a duplicated prefix (a stream only fails over before its first
chunk).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from ai_service.calls.record import current_call
from ai_service.errors import GatewayError, Internal, StreamInterrupted
from ai_service.identity.callers import Caller
from ai_service.pipeline.answers import Served
from ai_service.pipeline.drain import Drain
from ai_service.pipeline.state import ServiceState
from ai_service.policy.redaction import Screening
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
from ai_service.routing.router import DeploymentHandle, ModelRoute
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbedRequest,
    EmbedResponse,
    GetUsageRequest,
    GetUsageResponse,
    ListModelsResponse,
    Model,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StreamEnding:
    """What a stream that finished leaves for its door to report after the last chunk."""

    #: The deployment that served it; None when it was replayed from the cache.
    handle: DeploymentHandle | None = None
    attempts: int = 0
    #: The last chunk: its finish reasons, its usage and its cost.
    last: ChatCompletionChunk | None = None


class ServiceCore:
    def __init__(self, state: ServiceState) -> None:
        self.state = state  # each call reads it once: a reload never mixes two configs
        self._streams = OpenStreams()
        self._drain = Drain()

    def end_streams(self) -> None:
        """The drain's grace is about to end: every stream still running ends now, with
        DRAINING or STREAM_INTERRUPTED (see drain.py), rather than cut by its server."""
        self._drain.end_streams()

    @staticmethod
    async def _admit(
        state: ServiceState, request: ChatCompletionRequest, caller: Caller
    ) -> tuple[ModelRoute, Screening]:
        """Everything that can refuse a call before it costs an upstream request; redaction."""
        call = current_call.get()
        if call is not None:
            call.model_requested = request.model[:MAX_MODEL_CHARS]  # before it is validated
        validate_request(request, state.limits)
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

    async def chat(
        self, request: ChatCompletionRequest, caller: Caller, time_remaining: float | None
    ) -> Served[ChatCompletionResponse]:
        """The answer, screened; `time_remaining`: the caller's deadline (None: the
        configured default)."""
        state = self.state
        try:
            route, screening = await self._admit(state, request, caller)
            budget = Budget.for_call(time_remaining, state.default_deadline)
            with budget.bound(state.timers):
                outcome = await state.answers.answer(request, route, budget, caller)
        except GatewayError:
            raise
        except Exception:
            log.exception("ChatCompletion failed unexpectedly")
            raise Internal("internal error in the gateway") from None
        scrub_answer(outcome.value)
        await screening.answer(outcome.value)
        return outcome

    async def stream(
        self,
        request: ChatCompletionRequest,
        caller: Caller,
        time_remaining: float | None,
        ending: StreamEnding,
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """The answer's chunks, screened and numbered; `ending` is filled in once the
        last one has gone. Close it (`aclose`) when the caller leaves: the upstream
        stream is closed with it."""
        delivered = 0
        chars = 0
        call = current_call.get()
        state = self.state
        try:
            with self._streams.hold(caller), self._drain.hold() as held:
                route, screening = await self._admit(state, request, caller)
                budget = Budget.for_call(time_remaining, state.default_deadline)
                # The budget (and the end of a drain) bounds the waits on the upstream,
                # never a `yield`: cancelled while its door writes a chunk, the call would
                # end with no status at all.
                held.within(budget, state.timers)  # one timer for every wait of the stream
                with held:
                    outcome = await state.answers.answer_stream(request, route, budget, caller)
                first, rest = outcome.value
                # Time to first token: when the first chunk with some of the answer is
                # ready for the caller (past the policy), for the streams that have one.
                awaiting_output = call is not None
                chunk: ChatCompletionChunk | None = first
                guard = ReflectionGuard()
                screened = screening.reads_chunks
                async with contextlib.aclosing(rest):
                    while chunk is not None:
                        guard.chunk(chunk)
                        if screened:
                            await screening.chunk(chunk)
                        chunk.sequence = delivered
                        if awaiting_output and call is not None and carries_output(chunk):
                            awaiting_output = False
                            call.saw_first_token()
                        yield chunk
                        delivered += 1
                        chars += text_length(chunk)
                        last = chunk
                        with held:
                            chunk = await anext(rest, None)
                await screening.stream_ended()
                ending.handle, ending.attempts, ending.last = outcome.handle, outcome.attempts, last
        except GatewayError as error:
            if delivered:
                raise StreamInterrupted(
                    error, chunks_delivered=delivered, chars_delivered=chars
                ) from None
            raise
        except Exception:
            log.exception("StreamChatCompletion failed unexpectedly")
            raise Internal("internal error in the gateway") from None
        finally:  # however the stream ended: what its caller got, for the call's record
            if call is not None:
                call.chunks_delivered, call.chars_delivered = delivered, chars

    async def embed(
        self, request: EmbedRequest, caller: Caller, time_remaining: float | None
    ) -> Served[EmbedResponse]:
        state = self.state
        call = current_call.get()
        try:
            if call is not None:
                call.model_requested = request.model[:MAX_MODEL_CHARS]
            validate_embed(request, state.limits)
            route = state.router.resolve(request.model, caller)
            if call is not None:
                call.route = route
            # Redaction binds the inputs as it binds a chat prompt: they go upstream too.
            reachable = [model.name for model in state.router.reachable(route)]
            await state.policy.screening(caller.name, reachable, call).prompt(request)
            budget = Budget.for_call(time_remaining, state.default_deadline)
            with budget.bound(state.timers):
                return await state.answers.embed(request, route, budget, caller)
        except GatewayError:
            raise
        except Exception:
            log.exception("Embed failed unexpectedly")
            raise Internal("internal error in the gateway") from None

    def models(self, caller: Caller) -> ListModelsResponse:
        """The models `caller` may use."""
        router = self.state.router
        return ListModelsResponse(
            models=[
                Model(
                    id=route.name,
                    provider=route.deployments[0].handle.provider.kind,
                    deployments=[d.handle.name for d in route.deployments],
                    capabilities=router.capabilities(route),
                )
                for route in router.visible_to(caller)
            ]
        )

    async def usage(self, request: GetUsageRequest, caller: Caller) -> GetUsageResponse:
        return await self.state.usage.report(request, caller)
