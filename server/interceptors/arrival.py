"""A call's request message must arrive, and must be one: a bound and a clear status.

gRPC runs a unary-request handler only once the request message has arrived, and it
never stops waiting: a stream that sends its HEADERS and nothing more holds its
stream, its headers and a task for as long as the connection lives. So every handler
here is request-streaming, which gRPC runs from the headers, and reads the message
itself within `server.request_message_timeout_seconds` (each message, for a
request-streaming method such as reflection); a call whose message does not come is
ended DEADLINE_EXCEEDED (REQUEST_NOT_RECEIVED).

It also decodes the message itself: bytes that are no such message get
INVALID_ARGUMENT naming the request, where gRPC would answer UNKNOWN with the Python
exception's class in the status. AIService's calls are read by the telemetry
interceptor (the call's record and request id are there); this interceptor does it for
the open services beside it (health, reflection).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ai_service.calls.record import request_id_metadata
from ai_service.errors import DeadlineExceeded, GatewayError, InvalidRequest, RequestNotReceived
from ai_service.errors import abort as abort_with
from ai_service.interceptors.rejection import Handler, is_guarded
from ai_service.resilience.budget import Budget
from ai_service.timers import Timers

Context = grpc.aio.ServicerContext[Any, Any]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
Decode = Callable[[bytes], Any] | None

#: Handlers wrapped and kept (they are static objects, but a wrapper of the handler,
#: such as OpenTelemetry's, may make one per call: past this many, no more are kept).
_MAX_KEPT = 256


async def receive_request(context: Context, seconds: float) -> bytes | None:
    """The call's next request message (None once the caller has sent its last), or
    RequestNotReceived when it has not come within `seconds`."""
    # The budget's bound is the loop's shared timer: no timer of its own per call.
    budget = Budget(time.monotonic() + seconds)
    try:
        with budget.bound(Timers.of(asyncio.get_running_loop())):
            message = await context.read()
    except DeadlineExceeded:
        raise RequestNotReceived(
            f"no request message arrived within {seconds:g}s of the call's headers"
        ) from None
    return None if message is grpc.aio.EOF else message


def decoded(message: bytes | None, decode: Decode) -> Any:
    """The request from its bytes, or InvalidRequest saying why there is none."""
    if message is None:
        raise InvalidRequest("request", "missing: the call ended without a request message")
    if decode is None:
        return message
    try:
        return decode(message)
    except DecodeError as exc:
        raise InvalidRequest("request", f"cannot be decoded ({exc})") from None


class RequestArrival(grpc.aio.ServerInterceptor):
    """First in the call order: every non-AIService handler reads its request itself."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._wrapped: dict[int, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or is_guarded(handler_call_details.method):
            return handler
        kept = self._wrapped.get(id(handler))
        if kept is not None:
            return kept[1]
        wrapped = self._wrap(handler)
        if len(self._wrapped) < _MAX_KEPT:
            # Kept beside its wrapper, so that its id is never reused.
            self._wrapped[id(handler)] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Handler) -> Handler:
        decode = handler.request_deserializer
        serialize = handler.response_serializer
        seconds = self.seconds
        if handler.request_streaming:
            if handler.response_streaming:
                return grpc.stream_stream_rpc_method_handler(
                    _streaming(handler.stream_stream, seconds, decode, first=False),
                    None,
                    serialize,
                )
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary, seconds, decode, first=False), None, serialize
            )
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                _streaming(handler.unary_stream, seconds, decode, first=True), None, serialize
            )
        return grpc.stream_unary_rpc_method_handler(
            _unary(handler.unary_unary, seconds, decode, first=True), None, serialize
        )


async def _requests(context: Context, seconds: float, decode: Decode) -> AsyncIterator[Any]:
    while (message := await receive_request(context, seconds)) is not None:
        yield decoded(message, decode)


async def _input(context: Context, seconds: float, decode: Decode, *, first: bool) -> Any:
    """What the handler takes: its one request (`first`), or an iterator of them."""
    if first:
        return decoded(await receive_request(context, seconds), decode)
    return _requests(context, seconds, decode)


async def _refuse(context: Context, error: GatewayError) -> None:
    await abort_with(context, error, request_id_metadata())


def _unary(behavior: Any, seconds: float, decode: Decode, *, first: bool) -> Any:
    async def unary(requests: Any, context: Context) -> Any:
        try:
            return await behavior(await _input(context, seconds, decode, first=first), context)
        except GatewayError as error:  # no request, or no such request; the servicer's
            await _refuse(context, error)  # own errors are not GatewayErrors

    return unary


def _streaming(behavior: Any, seconds: float, decode: Decode, *, first: bool) -> Any:
    if inspect.iscoroutinefunction(behavior):  # the reader/writer API (health's Watch)

        async def written(requests: Any, context: Context) -> None:
            try:
                await behavior(await _input(context, seconds, decode, first=first), context)
            except GatewayError as error:
                await _refuse(context, error)

        return written

    async def generated(requests: Any, context: Context) -> AsyncIterator[Any]:
        try:
            request = await _input(context, seconds, decode, first=first)
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response
        except GatewayError as error:
            await _refuse(context, error)

    return generated
