"""The AIService servicer: validate, route, call the provider, translate the outcome.

Every failure leaves through `errors.abort`, so callers see the status codes and
details of DESIGN.md's error mapping and nothing internal. A stream that fails
after chunks were delivered ends UNAVAILABLE saying how many: never a silent
truncation that looks like success.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from protos import ai_service_pb2_grpc
from protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ListModelsRequest,
    ListModelsResponse,
    Model,
)
from server.config import GatewayConfig
from server.errors import GatewayError, Internal, StreamInterrupted, abort
from server.interceptors.auth import current_caller
from server.policy.validation import validate_for_model, validate_request
from server.resilience import Budget
from server.routing import Route, Router

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


class AIService(ai_service_pb2_grpc.AIServiceServicer):  # type: ignore[misc]
    def __init__(self, config: GatewayConfig, router: Router) -> None:
        self._limits = config.limits
        self._default_deadline = config.server.default_deadline_seconds
        self._router = router

    def _admit(self, request: ChatCompletionRequest) -> Route:
        """Everything that can refuse a call before it costs an upstream request."""
        validate_request(request, self._limits)
        route = self._router.resolve(request.model, current_caller.get())
        validate_for_model(request, route.model)
        return route

    async def ChatCompletion(
        self, request: ChatCompletionRequest, context: Context
    ) -> ChatCompletionResponse:
        try:
            route = self._admit(request)
            budget = Budget.for_call(context.time_remaining(), self._default_deadline)
            async with budget.bound():
                response = await route.provider.complete(request, route.deployment)
        except GatewayError as error:
            await abort(context, error)
        except Exception:
            log.exception("ChatCompletion failed unexpectedly")
            await abort(context, Internal("internal error in the gateway"))
        response.provider = route.deployment.provider
        response.deployment = route.deployment.name
        return response

    async def StreamChatCompletion(
        self, request: ChatCompletionRequest, context: Context
    ) -> AsyncIterator[ChatCompletionChunk]:
        delivered = 0
        try:
            route = self._admit(request)
            provider, deployment = route.deployment.provider, route.deployment.name
            budget = Budget.for_call(context.time_remaining(), self._default_deadline)
            async with budget.bound():
                chunks = route.provider.stream(request, route.deployment)
                try:
                    async for chunk in chunks:
                        chunk.sequence = delivered
                        chunk.provider = provider
                        chunk.deployment = deployment
                        yield chunk
                        delivered += 1
                finally:
                    # Closing the adapter's generator closes the upstream HTTP stream
                    # at once, also when the client cancelled.
                    await chunks.aclose()
        except GatewayError as error:
            await abort(
                context,
                StreamInterrupted(error, chunks_delivered=delivered) if delivered else error,
            )
        except Exception:
            log.exception("StreamChatCompletion failed unexpectedly")
            await abort(context, Internal("internal error in the gateway"))

    async def ListModels(self, request: ListModelsRequest, context: Context) -> ListModelsResponse:
        routes = self._router.visible_to(current_caller.get())
        return ListModelsResponse(
            models=[
                Model(
                    id=route.model.name,
                    provider=route.provider.kind,
                    deployments=[route.deployment.name],
                )
                for route in routes
            ]
        )
