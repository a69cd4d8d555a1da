"""Deciding about a call once its context exists.

An interceptor sees only the method and the metadata; what only the call's context
knows (the client certificate of a mutual-TLS connection) is read by a handler. Such a
handler, of the method's own shape (unary or server-streaming, with its request and
response types from the proto), first runs the decision, then the rest of the
interceptors and the method's own handler — or aborts with the decision's refusal.
Like the refusing handlers, one handler per method is built once; what a call decides
with travels in a context var set by the interceptor, in the same task.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
from google.protobuf import message_factory

from ai_service.calls.record import request_id_metadata
from ai_service.errors import GatewayError, abort
from ai_service.interceptors.rejection import GUARDED_METHODS, Handler

Context = grpc.aio.ServicerContext[Any, Any]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
#: Decides about the call from its context: returns to let it go on, raises a
#: GatewayError to refuse it.
Decision = Callable[[Context], None]

_pending: ContextVar[tuple[Decision, Continuation, grpc.HandlerCallDetails]] = ContextVar(
    "pending_decision"
)


def deciding_handler(
    method: str,
    decide: Decision,
    continuation: Continuation,
    details: grpc.HandlerCallDetails,
) -> Handler:
    """`method`'s handler, once `decide` has accepted the call in its context."""
    _pending.set((decide, continuation, details))
    return _DECIDERS[method]


async def _decided(context: Context) -> Handler:
    """The handler the rest of the interceptors give, once the decision let the call go."""
    decide, continuation, details = _pending.get()
    try:
        decide(context)
    except GatewayError as error:
        await abort(context, error, request_id_metadata())
    handler = await continuation(details)
    assert handler is not None  # a guarded method always has its handler
    return handler


async def _unary(request: Any, context: Context) -> Any:
    handler = await _decided(context)
    # A later interceptor's refusal is request-streaming and reads nothing (rejection.py);
    # the stubs type the aio behaviours as the sync ones.
    behaviour: Any = handler.stream_unary or handler.unary_unary
    return await behaviour(request, context)


async def _stream(request: Any, context: Context) -> AsyncIterator[Any]:
    handler = await _decided(context)
    behaviour: Any = handler.stream_stream or handler.unary_stream
    async with contextlib.aclosing(behaviour(request, context)) as items:
        async for item in items:
            yield item


def _decider(method: Any) -> Handler:
    request = message_factory.GetMessageClass(method.input_type)
    response = message_factory.GetMessageClass(method.output_type)
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _stream,
            request.FromString,
            response.SerializeToString,
        )
    return grpc.unary_unary_rpc_method_handler(
        _unary,
        request.FromString,
        response.SerializeToString,
    )


_DECIDERS: dict[str, Handler] = {path: _decider(m) for path, m in GUARDED_METHODS.items()}
