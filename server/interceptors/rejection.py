"""Refusing a call from an interceptor.

Interceptors get no servicer context, so a refusal is a replacement handler with
the method's response shape (unary or server-streaming, read from the proto
descriptor) that aborts with the gateway error's status. It is a request-streaming
handler that never reads: gRPC runs such a handler as soon as the call's headers
arrive, where it would wait for the request message before running a unary-request
one, so a call is refused from its headers even if its request never comes (a
stream that sends HEADERS alone would otherwise stay open). The request is not even
received, and the interceptors after this one never run: a refused call costs
nothing more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NamedTuple

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


#: Turns a refusal into another once the caller's address is known (interceptors do
#: not see it; the refusing handler does): `judge(peer, error)`.
Judge = Callable[[str, Any], Awaitable[GatewayError]]


class _Refusal(NamedTuple):
    error: GatewayError
    trailers: Trailers
    judge: Judge | None


# The refusal a call is about to get: set by the interceptor that refuses it, read by
# the (shared, per-method) refusing handler in the same task. Handlers stay static
# objects, so wrappers of them can be built once.
_refusal: ContextVar[_Refusal] = ContextVar("refusal")


def rejecting_handler(method: str, error: GatewayError, judge: Judge | None = None) -> Handler:
    """The handler that refuses the call with `error` (or what `judge` makes of it)."""
    # Every refusal names its call, so a caller can quote the id to an operator.
    _refusal.set(_Refusal(error, request_id_metadata(), judge))
    return _REFUSERS[method]


async def _abort(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    error, trailers, judge = _refusal.get()
    if judge is not None:
        error = await judge(context.peer(), error)
    await context.abort(*to_rpc_status(error, trailers))


async def _refuse(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    await _abort(context)


async def _refuse_stream(
    requests: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[Any]:
    await _abort(context)
    yield  # unreachable; makes this an async generator like the real handler


_REFUSERS: dict[str, Handler] = {
    method: grpc.stream_stream_rpc_method_handler(_refuse_stream)
    if streaming
    else grpc.stream_unary_rpc_method_handler(_refuse)
    for method, streaming in _SERVER_STREAMING.items()
}
