"""The client's exceptions, and the one place where gRPC errors become them.

A failed call carries a status code, a message and, in the `grpc-status-details-bin`
trailer, a `google.rpc.Status` whose details say what to do next (which field was
wrong, how long to wait, which quota ran out). `AIServiceError` decodes those once so
callers read typed attributes instead of unpacking `Any` messages themselves.

Each status a caller handles differently has its own subclass (`RateLimitError`,
`BadRequestError`, ...), picked by `error_for` from the code and the `ErrorInfo`
reason; catching `AIServiceError` and reading `.code` works for all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "AIServiceError",
    "AuthenticationError",
    "BadRequestError",
    "CallCancelledError",
    "DeadlineExceededError",
    "InternalError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "StreamInterruptedError",
    "UnavailableError",
    "error_for",
    "translate_rpc_errors",
]

REQUEST_ID_KEY = "x-request-id"
#: The gateway's `ErrorInfo.reason` for a stream that failed after chunks were sent.
STREAM_INTERRUPTED = "STREAM_INTERRUPTED"


class AIServiceError(Exception):
    """A call to the gateway failed.

    Attributes:
        code: the gRPC status code.
        message: the status message, as sent by the server.
        retry_after: seconds to wait before retrying (`google.rpc.RetryInfo`), if given.
        field_violations: `(field, description)` pairs (`google.rpc.BadRequest`).
        quota_violations: `(subject, description)` pairs (`google.rpc.QuotaFailure`).
        reason: the `google.rpc.ErrorInfo` reason, e.g. `"UPSTREAM_AUTH"`.
        domain: the `google.rpc.ErrorInfo` domain.
        error_metadata: the `google.rpc.ErrorInfo` metadata.
        request_id: the gateway's id for the call (`x-request-id`), to quote to its
            operators; None if the server sent none.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        retry_after: float | None = None,
        field_violations: list[tuple[str, str]] | None = None,
        quota_violations: list[tuple[str, str]] | None = None,
        reason: str | None = None,
        domain: str | None = None,
        error_metadata: dict[str, str] | None = None,
        request_id: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.field_violations = field_violations or []
        self.quota_violations = quota_violations or []
        self.reason = reason
        self.domain = domain
        self.error_metadata = error_metadata or {}
        self.request_id = request_id
        super().__init__(str(self))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (a process pool, multiprocessing) with every attribute, not only args.
        return (type(self), (self.code, self.message), self.__dict__)

    def __setstate__(self, state: dict[str, Any] | None) -> None:
        self.__dict__.update(state or {})
        self.args = (str(self),)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> AIServiceError:
        """Build from a failed sync (`grpc.RpcError`) or async (`grpc.aio.AioRpcError`) call.

        The result is the subclass for its status (see `error_for`), whichever class
        this is called on.
        """
        # A bare RpcError need not be a Call (it has no code() then): treat it as UNKNOWN.
        code_fn = getattr(error, "code", None)
        code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
        details_fn = getattr(error, "details", None)
        message = (details_fn() if callable(details_fn) else None) or ""
        details: dict[str, Any] = {}
        status = _rich_status(error)
        if status is not None:
            # A detail mangled on the way (DecodeError): the status line alone.
            with suppress(DecodeError):
                details = _decoded_details(status)
        return error_for(code, message, request_id=_request_id(error), **details)

    def __str__(self) -> str:
        """One line: `CODE: message (extra; extra)`, fit for a log or a terminal."""
        extras: list[str] = []
        for field, description in self.field_violations:
            # Servers often repeat the violation in the message; say it once.
            if description not in self.message:
                extras.append(f"{field}: {description}")
        if self.retry_after is not None and "retry after" not in self.message:
            extras.append(f"retry after {self.retry_after:.2f}".rstrip("0").rstrip(".") + "s")
        line = f"{self.code.name}: {self.message or self.code.name.lower()}"
        if extras:
            line += f" ({'; '.join(extras)})"
        return " ".join(line.split())  # no newlines, whatever the server sent

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r})"


class RateLimitError(AIServiceError):
    """RESOURCE_EXHAUSTED: over a request or token rate, a concurrency limit, or an
    upstream's quota. `retry_after` says when to come back (None if the server did not
    say); `quota_violations` which limit it was."""


class AuthenticationError(AIServiceError):
    """UNAUTHENTICATED: the key is missing, malformed or unknown."""


class PermissionDeniedError(AIServiceError):
    """PERMISSION_DENIED: the key may not use this model."""


class NotFoundError(AIServiceError):
    """NOT_FOUND: no such model (or, for `health()`, no such service)."""


class BadRequestError(AIServiceError):
    """INVALID_ARGUMENT: the request is malformed; `field_violations` name the fields."""


class UnavailableError(AIServiceError):
    """UNAVAILABLE: the gateway or every upstream that could answer is unreachable or
    failing; trying again later may succeed."""


class DeadlineExceededError(AIServiceError):
    """DEADLINE_EXCEEDED: the call's deadline ran out (or an upstream timed out)."""


class InternalError(AIServiceError):
    """INTERNAL: a failure inside the gateway, or its own provider credential refused;
    not the caller's fault."""


class CallCancelledError(AIServiceError):
    """CANCELLED: the call was cancelled, e.g. by closing the client while it ran.

    Named so as not to shadow `asyncio.CancelledError` in code that imports both.
    """


class StreamInterruptedError(AIServiceError):
    """A stream failed after chunks had been delivered (`ErrorInfo` reason
    `STREAM_INTERRUPTED`): what was received is a truncated answer.

    Raised as an `UnavailableError` too, or a `DeadlineExceededError` when a timeout cut
    the stream, so a handler for either status catches it as well.
    """

    @property
    def chunks_delivered(self) -> int | None:
        """How many chunks reached the caller before the failure, as the gateway counted."""
        return _int_or_none(self.error_metadata.get("chunks_delivered"))

    @property
    def chars_delivered(self) -> int | None:
        """How many characters of text those chunks carried."""
        return _int_or_none(self.error_metadata.get("chars_delivered"))

    @property
    def cause(self) -> str | None:
        """The reason of the failure that cut the stream, e.g. `UPSTREAM_UNAVAILABLE`."""
        return self.error_metadata.get("cause")

    def __repr__(self) -> str:
        # The concrete classes below are an implementation detail; the name to catch is this.
        return f"StreamInterruptedError({self.code.name}, {self.message!r})"


class _StreamInterruptedUnavailable(StreamInterruptedError, UnavailableError):
    """A stream cut by an upstream failure (the usual case)."""


class _StreamInterruptedDeadline(StreamInterruptedError, DeadlineExceededError):
    """A stream cut by a timeout."""


_BY_CODE: dict[grpc.StatusCode, type[AIServiceError]] = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimitError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: BadRequestError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.CANCELLED: CallCancelledError,
}
_STREAM_INTERRUPTED_BY_CODE: dict[grpc.StatusCode, type[AIServiceError]] = {
    grpc.StatusCode.UNAVAILABLE: _StreamInterruptedUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: _StreamInterruptedDeadline,
}


def error_for(code: grpc.StatusCode, message: str, **details: Any) -> AIServiceError:
    """The exception for a status: the one place that picks its class.

    `details` are `AIServiceError`'s keyword attributes (`reason`, `retry_after`, ...).
    Codes without a subclass of their own give a plain `AIServiceError`.
    """
    if details.get("reason") == STREAM_INTERRUPTED:
        error_class = _STREAM_INTERRUPTED_BY_CODE.get(code, StreamInterruptedError)
    else:
        error_class = _BY_CODE.get(code, AIServiceError)
    return error_class(code, message, **details)


def _decoded_details(status: status_pb2.Status) -> dict[str, Any]:
    """`AIServiceError`'s keyword attributes from a status's google.rpc details."""
    found: dict[str, Any] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delay = info.retry_delay
            found["retry_after"] = delay.seconds + delay.nanos / 1e9
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.setdefault("field_violations", []).extend(
                (v.field, v.description) for v in bad.field_violations
            )
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            found.setdefault("quota_violations", []).extend(
                (v.subject, v.description) for v in quota.violations
            )
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info_ = error_details_pb2.ErrorInfo()
            detail.Unpack(info_)
            found["reason"] = info_.reason or None
            found["domain"] = info_.domain or None
            found["error_metadata"] = dict(info_.metadata)
    return found


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _request_id(error: grpc.RpcError) -> str | None:
    """`x-request-id` from the trailers (a unary call, a refusal) or the headers (a stream)."""
    for name in ("trailing_metadata", "initial_metadata"):
        read = getattr(error, name, None)
        if not callable(read):
            continue
        for key, value in read() or ():
            if key == REQUEST_ID_KEY and isinstance(value, str):
                return value
    return None


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    if not callable(getattr(error, "trailing_metadata", None)):
        return None
    try:
        status: Any = rpc_status.from_call(error)
    except (ValueError, DecodeError):
        # The trailer disagrees with the status line, or is not a status at all (a
        # proxy rewrote one of them): the status line wins, the details are dropped.
        return None
    return status if isinstance(status, status_pb2.Status) else None


@contextmanager
def translate_rpc_errors() -> Iterator[None]:
    """Re-raise any `grpc.RpcError` raised inside as an `AIServiceError` (a subclass).

    Used around every call by both clients, so translation happens in this one place.
    """
    try:
        yield
    except grpc.RpcError as error:
        raise AIServiceError.from_rpc_error(error) from error
