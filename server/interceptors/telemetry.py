"""A request id and a `CallRecord` for every AIService call (the first interceptor
after the request's arrival bound and tracing).

The request id is the caller's `x-request-id` (when it is a plain token of at most
64 characters) or a new one; it goes back to the caller in the response metadata
(a stream's initial metadata, so it is known from the first chunk; a unary call's
trailing metadata, with its status, so it costs no extra send), into every log line
of the call (`observability/logging.py`) and into the audit record. The record is
put in `current_call` for the interceptors and the servicer after this one, and
closed with the call's status whoever ended it: the servicer, an interceptor's
refusal, or the caller cancelling. Health and reflection pass untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any, NoReturn, cast

import grpc
from google.rpc import error_details_pb2, status_pb2

from ai_service.calls.record import REQUEST_ID_KEY, CallRecord, current_call, request_id_metadata
from ai_service.entry.calls import OpenCalls
from ai_service.errors import STATUS_DETAILS_KEY, GatewayError, abort
from ai_service.identity.callers import current_caller
from ai_service.interceptors.arrival import Arrivals, decoded
from ai_service.interceptors.auth import Continuation
from ai_service.interceptors.rejection import Handler, is_guarded

Context = grpc.aio.ServicerContext[Any, Any]

#: A client's deadline passes before the server's: the server counts its copy from when
#: the request arrived. At its deadline the client cancels the call, and that cancel
#: reaches the gateway a little before the gateway's own copy runs out (milliseconds
#: measured on loopback; a cold channel's handshake or a long network path adds to it).
#: A cancel this close to the deadline is the caller's deadline, as the caller saw it.
DEADLINE_SLACK_SECONDS = 0.25


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, calls: OpenCalls, arrivals: Arrivals) -> None:
        #: The gateway's calls in flight, over every door (their records' begin and end).
        self.open_calls = calls
        #: The bounds on the wait for a call's request message.
        self.arrivals = arrivals
        # The observing wrapper of each method's handler, built once: the call's
        # record reaches it through `current_call`, not through a per-call closure.
        # Handlers are static objects (refusals included), so this stays small; the
        # handler is kept beside its wrapper so that its id is never reused.
        self._observed: dict[int, tuple[Handler, Handler]] = {}

    @property
    def calls(self) -> int:
        """Calls begun and not yet ended, over every door."""
        return self.open_calls.count

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        method = handler_call_details.method
        if not is_guarded(method):
            return await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        call = self.open_calls.open(method.rsplit("/", 1)[-1], metadata, "grpc")
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        call.streaming = handler.unary_stream is not None
        cached = self._observed.get(id(handler))
        if cached is None:
            cached = self._observed[id(handler)] = (handler, _observing(handler, self))
        return cached[1]


def _observing(handler: Handler, interceptor: TelemetryInterceptor) -> Handler:
    # AIService's methods are all unary-request; the stubs type the aio behaviours
    # as the sync ones. The wrapper is request-streaming, which gRPC runs from the
    # call's headers: it reads the request itself, within the bound (see arrival.py),
    # and decodes it once the call has its record and request id, so bytes that are no
    # request get a status that says so. A refusal is request-streaming already (it
    # answers from the headers, see rejection.py) and is given the requests unread.
    read = not handler.request_streaming
    decode = handler.request_deserializer
    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            _observed_stream(
                handler.stream_stream or handler.unary_stream,  # type: ignore[arg-type]
                interceptor,
                decode,
                read,
            ),
            None,
            handler.response_serializer,
        )
    return grpc.stream_unary_rpc_method_handler(
        _observed_unary(
            handler.stream_unary or handler.unary_unary,  # type: ignore[arg-type]
            interceptor,
            decode,
            read,
        ),
        None,
        handler.response_serializer,
    )


Decode = Callable[[bytes], Any] | None


async def _request(
    requests: Any, context: Context, decode: Decode, read: bool, arrivals: Arrivals
) -> Any:
    """The request message (`read`), or the requests as they are (a refusal's)."""
    if not read:
        return requests
    return decoded(await arrivals.receive(context), decode)


def _observed_unary(
    behavior: Callable[[Any, Context], Awaitable[Any]],
    interceptor: TelemetryInterceptor,
    decode: Decode,
    read: bool,
) -> Callable[[Any, Context], Awaitable[Any]]:
    async def unary(requests: Any, context: Context) -> Any:
        call = _begin(interceptor.open_calls)  # the `try` below ends it, every way out
        try:
            try:
                request = await _request(requests, context, decode, read, interceptor.arrivals)
            except GatewayError as error:
                await abort(context, error, request_id_metadata())
            response = await behavior(request, context)
        except BaseException as exc:
            _end(call, context, exc, interceptor)
            raise
        trailers = context.trailing_metadata() or ()
        context.set_trailing_metadata((*trailers, (REQUEST_ID_KEY, call.request_id)))
        _end(call, context, None, interceptor)
        return response

    return unary


def _observed_stream(
    behavior: Callable[[Any, Context], AsyncGenerator[Any, None]],
    interceptor: TelemetryInterceptor,
    decode: Decode,
    read: bool,
) -> Callable[[Any, Context], Awaitable[None]]:
    # A coroutine that writes each chunk itself (grpc.aio's reader-writer form), not an
    # async generator that grpc.aio iterates: a cancel or deadline that lands while a
    # chunk is being sent then raises here, in `write`, and the upstream stream is closed
    # and the call recorded at once. An async generator would be left at its `yield`,
    # closed only when the garbage collector finalizes it. It also spares each chunk a
    # generator's pass.
    async def stream(requests: Any, context: Context) -> None:
        call = _begin(interceptor.open_calls)  # the `try` below ends it, every way out
        early = EarlyMetadata(context, ((REQUEST_ID_KEY, call.request_id),))
        sending = False
        try:
            try:
                request = await _request(requests, context, decode, read, interceptor.arrivals)
            except GatewayError as error:
                await abort(early.context, error, request_id_metadata())
            items = behavior(request, early.context)
            try:
                async for item in items:
                    if early.sending is not None:
                        await early.sent()
                    sending = True
                    await context.write(item)
                    sending = False
            finally:  # closed at once when the caller leaves, so the upstream stream is too
                await items.aclose()
            await early.sent()
        except BaseException as exc:
            # gRPC's own error from a chunk's send: the call ended under it (the caller
            # cancelled or its deadline passed, as a CancelledError would say).
            gone = sending and isinstance(exc, grpc.aio.BaseError)
            try:
                if isinstance(exc, Exception) and not gone:
                    await early.sent()  # grpc.aio sends a status after it
            finally:  # even if the caller cancels while that send finishes
                _end(call, context, asyncio.CancelledError() if gone else exc, interceptor)
            raise
        _end(call, context, None, interceptor)

    return stream


class EarlyMetadata:
    """The call's context, with the stream's initial metadata on its way.

    Awaiting the send would hold the upstream request back by a round trip through
    gRPC core (~0.2 ms on an idle machine), so it runs in a task of its own. gRPC takes
    one initial-metadata send per call, and grpc.aio adds one to whatever it sends first
    unless the earlier send has finished: so a message, an abort (this view's `abort`
    waits) and the final status all wait for it.
    """

    __slots__ = ("_context", "sending")

    def __init__(self, context: Context, metadata: tuple[tuple[str, str], ...]) -> None:
        self._context = context
        sending = asyncio.ensure_future(context.send_initial_metadata(metadata))
        sending.add_done_callback(_failure_seen)
        self.sending: asyncio.Future[None] | None = sending

    @property
    def context(self) -> Context:
        return cast(Context, self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def sent(self) -> None:
        sending = self.sending
        if sending is not None:
            self.sending = None
            if sending.done():  # the usual case by the first chunk: no shield to build
                return
            # Failed only if the caller has gone: what is sent next fails and says so.
            with contextlib.suppress(Exception):
                await asyncio.shield(sending)

    # Whatever else sends on the call waits too; the rest is the call's own context.

    async def abort(self, *args: Any, **kwargs: Any) -> NoReturn:
        await self.sent()
        await self._context.abort(*args, **kwargs)
        raise AssertionError("ServicerContext.abort returned")  # it always raises

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.sent()
        await self._context.abort_with_status(status)
        raise AssertionError("ServicerContext.abort_with_status returned")

    async def write(self, message: Any) -> None:
        await self.sent()
        await self._context.write(message)

    async def send_initial_metadata(self, metadata: Any) -> None:
        raise RuntimeError("this stream's initial metadata is sent by the telemetry interceptor")


def _failure_seen(sending: asyncio.Future[None]) -> None:
    # Taken here too, for a call cancelled before anyone waited: asyncio would log
    # the failure as never retrieved.
    if not sending.cancelled():
        sending.exception()


def _current() -> CallRecord:
    call = current_call.get()
    assert call is not None  # set by intercept_service, in this same task
    return call


def _begin(calls: OpenCalls) -> CallRecord:
    call = _current()
    # The caller was set by the auth interceptor, after this one (none: refused there).
    calls.begin(call, current_caller.get(None))
    return call


def _end(
    call: CallRecord,
    context: Context,
    error: BaseException | None,
    interceptor: TelemetryInterceptor,
) -> None:
    calls = interceptor.open_calls
    calls.end(call, *_outcome(context, error, calls))


def _outcome(
    context: Context, error: BaseException | None, calls: OpenCalls
) -> tuple[grpc.StatusCode, str]:
    """The status the caller got, and its reason."""
    if error is None:
        return grpc.StatusCode.OK, ""
    if isinstance(error, asyncio.CancelledError):
        # The call was cancelled. After a stopping server's grace it was the shutdown,
        # and at the deadline gRPC's deadline: the caller saw that.
        if calls.grace_ended:
            return grpc.StatusCode.UNAVAILABLE, "SHUTDOWN"
        remaining = context.time_remaining()
        deadline_passed = remaining is not None and remaining <= DEADLINE_SLACK_SECONDS
        code = grpc.StatusCode.DEADLINE_EXCEEDED if deadline_passed else grpc.StatusCode.CANCELLED
        return code, code.name
    code = context.code()
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return code, _reason(context.trailing_metadata())


def _reason(trailers: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The ErrorInfo reason every gateway refusal carries (errors.to_rpc_status)."""
    for name, value in trailers or ():
        if name == STATUS_DETAILS_KEY and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""
