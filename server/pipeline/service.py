"""The AIService servicer: the gRPC door onto the service core (`core.py`).

Every failure leaves through `errors.abort`, so callers see the status codes and
details docs/errors.md lists and nothing internal. A stream has a defined ending:
gap-free sequence numbers, finish_reason and usage on the last chunk and in the
trailing metadata, and a failure after chunks were delivered ends UNAVAILABLE
(STREAM_INTERRUPTED) saying how many.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc

from ai_service.calls.record import request_id_metadata
from ai_service.errors import AnswerTooLarge, GatewayError, abort
from ai_service.identity.callers import current_caller
from ai_service.pipeline.core import ServiceCore, StreamEnding
from ai_service.pipeline.state import ServiceState
from ai_service.routing.router import DeploymentHandle
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
)

__all__ = ["AIService", "ServiceState"]

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


class AIService(ai_service_pb2_grpc.AIServiceServicer):  # type: ignore[misc]
    """The gRPC door onto `ServiceCore`: the caller from the interceptors, the deadline
    from the call, failures as statuses, the outcome in trailing metadata."""

    def __init__(self, core: ServiceCore, max_send_bytes: int) -> None:
        self.core = core
        #: gRPC refuses to send a larger message, and would end the call with a status
        #: the gateway never saw: such an answer is refused here, and recorded so.
        self._max_send_bytes = max_send_bytes

    def _sendable(self, answer: ChatCompletionResponse | EmbedResponse) -> None:
        size = answer.ByteSize()
        if size > self._max_send_bytes:
            raise AnswerTooLarge(
                f"the answer ({size} bytes) is larger than the gateway may send "
                f"(server.max_send_message_bytes, {self._max_send_bytes})"
            )

    async def ChatCompletion(
        self, request: ChatCompletionRequest, context: Context
    ) -> ChatCompletionResponse:
        try:
            outcome = await self.core.chat(request, current_caller.get(), context.time_remaining())
            self._sendable(outcome.value)
        except GatewayError as error:
            await abort(context, error, request_id_metadata())
        response = outcome.value
        trailers = _outcome_metadata(outcome.handle, outcome.attempts)
        context.set_trailing_metadata((*trailers, *_cost_metadata(response.cost)))
        return response

    async def StreamChatCompletion(
        self, request: ChatCompletionRequest, context: Context
    ) -> AsyncIterator[ChatCompletionChunk]:
        ending = StreamEnding()
        chunks = self.core.stream(request, current_caller.get(), context.time_remaining(), ending)
        try:
            # Closed at once when the caller leaves, and the upstream stream with it.
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
        except GatewayError as error:
            await abort(context, error, request_id_metadata())
        assert ending.last is not None  # a stream that ended well had its last chunk
        trailers = _outcome_metadata(ending.handle, ending.attempts)
        last = ending.last
        context.set_trailing_metadata(
            (*trailers, *_ending_metadata(last), *_cost_metadata(last.cost))
        )

    async def Embed(self, request: EmbedRequest, context: Context) -> EmbedResponse:
        try:
            outcome = await self.core.embed(request, current_caller.get(), context.time_remaining())
            self._sendable(outcome.value)
        except GatewayError as error:
            await abort(context, error, request_id_metadata())
        trailers = _outcome_metadata(outcome.handle, outcome.attempts)
        context.set_trailing_metadata((*trailers, *_cost_metadata(outcome.value.cost)))
        return outcome.value

    async def ListModels(self, request: ListModelsRequest, context: Context) -> ListModelsResponse:
        return self.core.models(current_caller.get())

    async def GetUsage(self, request: GetUsageRequest, context: Context) -> GetUsageResponse:
        try:
            return await self.core.usage(request, current_caller.get())
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
