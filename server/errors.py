"""The gateway's one error hierarchy and its one translation to a gRPC status.

Anything on the data path raises a `GatewayError` subclass; the servicer and the
interceptors turn it into a status with google.rpc details through `to_rpc_status`
and nothing else, so every client sees the same codes and detail types
(docs/errors.md lists them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

# Where statuses have always found them; the registry lives in ai_service.secrecy.
from ai_service.secrecy import MIN_SECRET_CHARS as MIN_SECRET_CHARS
from ai_service.secrecy import keep_secret as keep_secret
from ai_service.secrecy import scrub_secrets as scrub_secrets

ERROR_DOMAIN = "ai-service.v1"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"

Trailers = tuple[tuple[str, str | bytes], ...]


class GatewayError(Exception):
    """A refusal or failure with a gRPC status code and structured details."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"
    #: Whether another attempt (same or other deployment) may succeed.
    retryable: bool = False
    #: Whether a client's own gRPC retry policy may retry it. The gateway retries and
    #: fails over upstream itself, within a budget; a client retrying on top would
    #: multiply the load of an outage, so such statuses tell clients not to.
    client_may_retry: bool = False

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}

    def details(self) -> list[object]:
        """google.rpc detail messages beyond ErrorInfo; subclasses add theirs."""
        return []


class InvalidRequest(GatewayError):
    """The caller's request is malformed; names the offending field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_REQUEST"

    def __init__(
        self, field: str, description: str, *, more: Sequence[tuple[str, str]] = ()
    ) -> None:
        """`more`: further (field, description) violations of the same request, each
        reported in the BadRequest (a batch's bad items, all at once)."""
        also = f" (and {len(more)} more)" if more else ""
        super().__init__(f"{field}: {description}{also}")
        self.field = field
        self.description = description
        self.more = tuple(more)

    def details(self) -> list[object]:
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            for field, description in ((self.field, self.description), *self.more)
        ]
        return [error_details_pb2.BadRequest(field_violations=violations)]


class RequestNotReceived(GatewayError):
    """A call's request message did not arrive within the server's bound after its headers."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "REQUEST_NOT_RECEIVED"


class Unauthenticated(GatewayError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(GatewayError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "MODEL_NOT_ALLOWED"


class ModelNotFound(GatewayError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "MODEL_NOT_FOUND"


class RateLimited(GatewayError):
    """The caller is over one of its limits; says which and when to come back."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: float, subject: str, quota: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.subject = subject
        self.quota = quota

    def details(self) -> list[object]:
        return [retry_info(self.retry_after), quota_failure(self.subject, self.quota)]


class AuthThrottled(RateLimited):
    """A client address past its allowance of failed authentications."""

    reason = "AUTH_THROTTLED"


class BudgetExceeded(RateLimited):
    """A call's most possible cost would take a key's or a team's spend past its budget;
    `retry_after` is the time until the budget's period starts again."""

    reason = "BUDGET_EXCEEDED"


class ModelUnpriced(GatewayError):
    """A caller under a budget asked for a model a deployment of which has no price:
    its calls could not be counted against the budget."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "MODEL_UNPRICED"


class TooManyStreams(GatewayError):
    """A key is at its limit of concurrent streams."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "TOO_MANY_STREAMS"

    def __init__(self, message: str, *, subject: str, limit: int) -> None:
        super().__init__(message)
        self.subject = subject
        self.limit = limit

    def details(self) -> list[object]:
        return [quota_failure(self.subject, f"{self.limit} concurrent streams")]


class Draining(GatewayError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "DRAINING"
    retryable = True
    client_may_retry = True  # another replica will take the call


class UpstreamError(GatewayError):
    """A failure reported by, or on the way to, an upstream provider."""

    reason = "UPSTREAM_ERROR"


class UpstreamInvalidRequest(UpstreamError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "UPSTREAM_INVALID_REQUEST"


class UpstreamAuth(UpstreamError):
    """The gateway's own provider credential was refused: not the caller's fault."""

    code = grpc.StatusCode.INTERNAL
    reason = "UPSTREAM_AUTH"


class UpstreamNotFound(UpstreamError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "UPSTREAM_MODEL_NOT_FOUND"


class UpstreamTimeout(UpstreamError):
    """The upstream went quiet for longer than its read timeout: another may answer."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "UPSTREAM_TIMEOUT"
    retryable = True


class DeadlineExceeded(GatewayError):
    """The call's own deadline (the client's, or the configured default) ran out."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class AnswerTooLarge(GatewayError):
    """An answer larger than the gateway may send (server.max_send_message_bytes)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "ANSWER_TOO_LARGE"


class DeploymentBusy(GatewayError):
    """A deployment has no free slot: its queue is full, or the wait would pass the deadline."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "DEPLOYMENT_BUSY"
    retryable = True


class NoHealthyDeployment(GatewayError):
    """Every deployment that could serve the call has its circuit open."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "NO_HEALTHY_DEPLOYMENT"


class UpstreamRateLimited(UpstreamError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "UPSTREAM_RATE_LIMITED"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def details(self) -> list[object]:
        return [] if self.retry_after is None else [retry_info(self.retry_after)]


class UpstreamUnavailable(UpstreamError):
    """5xx, connection failure, reset or a body that cannot be parsed."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UPSTREAM_UNAVAILABLE"
    retryable = True


class StreamInterrupted(UpstreamError):
    """The upstream failed after chunks already reached the client: never silent."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "STREAM_INTERRUPTED"

    def __init__(self, cause: GatewayError, *, chunks_delivered: int, chars_delivered: int) -> None:
        if isinstance(cause, UpstreamTimeout | DeadlineExceeded):
            self.code = grpc.StatusCode.DEADLINE_EXCEEDED  # still a timeout, with the count
        # The exact count is the provider's to tell, and it never got to: estimate it
        # the way the token budget does (characters / 4).
        tokens = -(-chars_delivered // 4)
        super().__init__(
            f"stream interrupted after {chunks_delivered} chunks ({chars_delivered} characters "
            f"of text, ~{tokens} tokens): {cause.message}",
            metadata={
                "chunks_delivered": str(chunks_delivered),
                "chars_delivered": str(chars_delivered),
                "tokens_delivered_estimate": str(tokens),
                "cause": cause.reason,
            },
        )


class Internal(GatewayError):
    """An unexpected failure inside the gateway; the message never carries internals."""


#: The most of a caller's own text an error quotes back: the status travels in trailing
#: metadata, which gRPC caps (16 KiB by default), and it is logged and audited.
MAX_QUOTED_CHARS = 64


def quoted(value: str) -> str:
    """`value` as an error message shows what the caller sent: repr, cut if long."""
    if len(value) <= MAX_QUOTED_CHARS:
        return repr(value)
    return repr(value[:MAX_QUOTED_CHARS]) + f"… ({len(value)} characters)"


def quota_failure(subject: str, description: str) -> error_details_pb2.QuotaFailure:
    violation = error_details_pb2.QuotaFailure.Violation(subject=subject, description=description)
    return error_details_pb2.QuotaFailure(violations=[violation])


#: The longest delay a google.protobuf.Duration holds (10,000 years); an upstream's
#: Retry-After may be any number of digits.
MAX_RETRY_DELAY_SECONDS = 315_576_000_000


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    seconds = min(max(seconds, 0.0), MAX_RETRY_DELAY_SECONDS)
    whole = math.floor(seconds)
    delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def to_rpc_status(
    error: GatewayError, extra: Trailers = ()
) -> tuple[grpc.StatusCode, str, Trailers]:
    """The (code, message, trailing metadata) that carry `error` to any gRPC client."""
    message = scrub_secrets(error.message)
    metadata = {name: scrub_secrets(value) for name, value in error.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    details: Sequence[object] = [info, *error.details()]
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)  # type: ignore[arg-type]
        packed.append(holder)
    status = status_pb2.Status(code=_CODE_NUMBERS[error.code], message=message, details=packed)
    trailers: Trailers = ((STATUS_DETAILS_KEY, status.SerializeToString()), *extra)
    if error.code is grpc.StatusCode.UNAVAILABLE and not error.client_may_retry:
        # gRPC's retry pushback: a negative value tells the client's policy not to retry.
        trailers = (*trailers, (RETRY_PUSHBACK_KEY, "-1"))
    return error.code, message, trailers


async def abort(
    context: grpc.aio.ServicerContext[object, object], error: GatewayError, extra: Trailers = ()
) -> None:
    """End the call with `error` and `extra` trailing metadata; raises, as `context.abort` does."""
    code, message, trailers = to_rpc_status(error, extra)
    await context.abort(code, message, trailers)


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {
    status: getattr(code_pb2, status.name) for status in grpc.StatusCode
}
