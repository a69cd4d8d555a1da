"""A call's request message must arrive, and must be one: a bound and a clear status.

gRPC runs a unary-request handler only once the request message has arrived, and it
never stops waiting: a stream that sends its HEADERS and nothing more holds its
stream, its headers and a task for as long as the connection lives. So every handler
here is request-streaming, which gRPC runs from the headers, and reads the message
itself within `server.request_message_timeout_seconds` (each message, for a
request-streaming method such as reflection); a call whose message does not come is
ended DEADLINE_EXCEEDED (REQUEST_NOT_RECEIVED). At most
`server.max_calls_awaiting_request` calls wait at once: past it, the longest waiting
is ended to make room.

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


class Arrivals:
    """Calls waiting for their request message: each for `seconds` at most, and at most
    `most` at once. Past that, the one that has waited longest is ended to make room: a
    call whose message comes with its headers waits for microseconds, so the oldest
    waiter is nearly always one that sends nothing."""

    def __init__(self, seconds: float, most: int) -> None:
        self.seconds = seconds
        self.most = most
        #: Oldest first (dicts keep insertion order).
        self._waiting: dict[asyncio.Task[Any], _Wait] = {}

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def receive(self, context: Context) -> bytes | None:
        """The call's next request message (None once the caller has sent its last), or
        RequestNotReceived when it does not come in time, or its place is needed."""
        task = asyncio.current_task()
        assert task is not None
        if len(self._waiting) >= self.most:
            self._waiting.pop(next(iter(self._waiting))).end()
        wait = self._waiting[task] = _Wait(task)
        # The budget's bound is the loop's shared timer: no timer of its own per call.
        budget = Budget(time.monotonic() + self.seconds)
        try:
            with budget.bound(Timers.of(asyncio.get_running_loop())):
                message = await context.read()
        except DeadlineExceeded:
            raise RequestNotReceived(
                f"no request message arrived within {self.seconds:g}s of the call's headers"
            ) from None
        except asyncio.CancelledError:
            if not wait.ended or task.uncancel():
                raise
            raise RequestNotReceived(
                f"no request message arrived while {self.most} calls waited for theirs "
                "(the longest waiting are ended first)"
            ) from None
        finally:
            if self._waiting.get(task) is wait:
                del self._waiting[task]
        return None if message is grpc.aio.EOF else message


class _Wait:
    __slots__ = ("ended", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.ended = False

    def end(self) -> None:
        self.ended = True
        self.task.cancel()


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

    def __init__(self, arrivals: Arrivals) -> None:
        self._arrivals = arrivals
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
        arrivals = self._arrivals
        if handler.request_streaming:
            if handler.response_streaming:
                return grpc.stream_stream_rpc_method_handler(
                    _streaming(handler.stream_stream, arrivals, decode, first=False),
                    None,
                    serialize,
                )
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary, arrivals, decode, first=False), None, serialize
            )
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                _streaming(handler.unary_stream, arrivals, decode, first=True), None, serialize
            )
        return grpc.stream_unary_rpc_method_handler(
            _unary(handler.unary_unary, arrivals, decode, first=True), None, serialize
        )


async def _requests(context: Context, arrivals: Arrivals, decode: Decode) -> AsyncIterator[Any]:
    while (message := await arrivals.receive(context)) is not None:
        yield decoded(message, decode)


async def _input(context: Context, arrivals: Arrivals, decode: Decode, *, first: bool) -> Any:
    """What the handler takes: its one request (`first`), or an iterator of them."""
    if first:
        return decoded(await arrivals.receive(context), decode)
    return _requests(context, arrivals, decode)


async def _refuse(context: Context, error: GatewayError) -> None:
    await abort_with(context, error, request_id_metadata())


def _unary(behavior: Any, arrivals: Arrivals, decode: Decode, *, first: bool) -> Any:
    async def unary(requests: Any, context: Context) -> Any:
        try:
            return await behavior(await _input(context, arrivals, decode, first=first), context)
        except GatewayError as error:  # no request, or no such request; the servicer's
            await _refuse(context, error)  # own errors are not GatewayErrors

    return unary


def _streaming(behavior: Any, arrivals: Arrivals, decode: Decode, *, first: bool) -> Any:
    if inspect.iscoroutinefunction(behavior):  # the reader/writer API (health's Watch)

        async def written(requests: Any, context: Context) -> None:
            try:
                await behavior(await _input(context, arrivals, decode, first=first), context)
            except GatewayError as error:
                await _refuse(context, error)

        return written

    async def generated(requests: Any, context: Context) -> AsyncIterator[Any]:
        try:
            request = await _input(context, arrivals, decode, first=first)
            async with contextlib.aclosing(behavior(request, context)) as responses:
                async for response in responses:
                    yield response
        except GatewayError as error:
            await _refuse(context, error)

    return generated
