"""The client's one exception, and the one place where gRPC errors become it.

A failed call carries a status code, a message and, in the `grpc-status-details-bin`
trailer, a `google.rpc.Status` whose details say what to do next (which field was
wrong, how long to wait, which quota ran out). `AIServiceError` decodes those once so
callers read typed attributes instead of unpacking `Any` messages themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = ["AIServiceError", "translate_rpc_errors"]

REQUEST_ID_KEY = "x-request-id"


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
        """Build from a failed sync (`grpc.RpcError`) or async (`grpc.aio.AioRpcError`) call."""
        # A bare RpcError need not be a Call (it has no code() then): treat it as UNKNOWN.
        code_fn = getattr(error, "code", None)
        code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
        details_fn = getattr(error, "details", None)
        message = (details_fn() if callable(details_fn) else None) or ""
        err = cls(code, message, request_id=_request_id(error))
        status = _rich_status(error)
        if status is not None:
            try:
                err._apply_details(status)
            except DecodeError:  # a detail mangled on the way: the status line alone
                err = cls(code, message, request_id=err.request_id)
        return err

    def _apply_details(self, status: status_pb2.Status) -> None:
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                delay = info.retry_delay
                self.retry_after = delay.seconds + delay.nanos / 1e9
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                self.field_violations += [(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                quota = error_details_pb2.QuotaFailure()
                detail.Unpack(quota)
                self.quota_violations += [(v.subject, v.description) for v in quota.violations]
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info_ = error_details_pb2.ErrorInfo()
                detail.Unpack(info_)
                self.reason = info_.reason or None
                self.domain = info_.domain or None
                self.error_metadata = dict(info_.metadata)
        # The message was formatted before the details were known.
        self.args = (str(self),)

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
    """Re-raise any `grpc.RpcError` raised inside as an `AIServiceError`.

    Used around every call by both clients, so translation happens in this one place.
    """
    try:
        yield
    except grpc.RpcError as error:
        raise AIServiceError.from_rpc_error(error) from error
