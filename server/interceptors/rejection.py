"""Refusing a call from an interceptor.

Interceptors get no servicer context, so a refusal is a replacement handler of
the same shape as the method's own (unary or server-streaming, read from the
proto descriptor) that aborts with the gateway error's status. The request is
not even deserialised, and the interceptors after this one never run: a refused
call costs nothing more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.descriptor import MethodDescriptor

from ai_service.calls.record import request_id_metadata
from ai_service.errors import GatewayError, Trailers, to_rpc_status
from ai_service_protos import ai_service_pb2

if TYPE_CHECKING:  # the stubs make the handler generic; the runtime class is not
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler

#: The guarded services: inference, and the administration of keys.
_SERVICES = [ai_service_pb2.DESCRIPTOR.services_by_name[name] for name in ("AIService", "Admin")]
#: Full method path → its descriptor.
GUARDED_METHODS: dict[str, MethodDescriptor] = {
    f"/{service.full_name}/{method.name}": method
    for service in _SERVICES
    for method in service.methods
}
#: Full method path → whether the server streams its answer.
_SERVER_STREAMING = {path: method.server_streaming for path, method in GUARDED_METHODS.items()}


def is_guarded(method: str) -> bool:
    """Inference and administration are guarded: health and reflection stay open."""
    return method in _SERVER_STREAMING


# The refusal a call is about to get: set by the interceptor that refuses it, read by
# the (shared, per-method) refusing handler in the same task. Handlers stay static
# objects, so wrappers of them can be built once.
_refusal: ContextVar[tuple[grpc.StatusCode, str, Trailers]] = ContextVar("refusal")


def rejecting_handler(method: str, error: GatewayError) -> Handler:
    # Every refusal names its call, so a caller can quote the id to an operator.
    _refusal.set(to_rpc_status(error, request_id_metadata()))
    return _REFUSERS[method]


async def _refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(*_refusal.get())


async def _refuse_stream(
    request: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[Any]:
    await context.abort(*_refusal.get())
    yield  # unreachable; makes this an async generator like the real handler


_REFUSERS: dict[str, Handler] = {
    method: grpc.unary_stream_rpc_method_handler(_refuse_stream)
    if streaming
    else grpc.unary_unary_rpc_method_handler(_refuse)
    for method, streaming in _SERVER_STREAMING.items()
}
