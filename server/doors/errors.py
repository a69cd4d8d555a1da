"""The gateway's errors in each HTTP API's own terms: the status, the body, the headers.

One `GatewayError`, three spellings: gRPC's status (errors.to_rpc_status), OpenAI's
`{"error": {"message", "type", "param", "code"}}` and Anthropic's
`{"type": "error", "error": {"type", "message"}, "request_id"}`, each with the HTTP
status the official SDKs turn into their own exception classes (400 BadRequestError,
401 AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 429
RateLimitError, 5xx InternalServerError or the like). A refusal with a time to come
back carries `retry-after` (and `retry-after-ms`); the gateway has already retried and
failed over upstream, so a failure the caller should not retry on top says
`x-should-retry: false`, which both SDKs obey, as gRPC's clients obey the retry
pushback. Messages are scrubbed of the configured secrets, as in a gRPC status.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import orjson

from ai_service.errors import (
    BudgetExceeded,
    GatewayError,
    InvalidRequest,
    RateLimited,
    UpstreamRateLimited,
    scrub_secrets,
)
from ai_service.providers.translation import ANTHROPIC_ERROR_STATUS

Headers = list[tuple[bytes, bytes]]

_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

#: OpenAI's `type` by status (its API reference's error objects).
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
#: OpenAI's `code` where it has one for the same thing; else the gateway's reason.
_OPENAI_CODES = {
    "UNAUTHENTICATED": "invalid_api_key",
    "MODEL_NOT_FOUND": "model_not_found",
    "RATE_LIMITED": "rate_limit_exceeded",
    "BUDGET_EXCEEDED": "insufficient_quota",
}
#: Anthropic's error `type` by status: its documented table (translation.py), turned round.
_ANTHROPIC_TYPES = {status: kind for kind, status in ANTHROPIC_ERROR_STATUS.items()}


class BodyTooLarge(InvalidRequest):
    """A request body past `server.http.max_body_bytes`: refused 413, unread."""

    http_status = 413

    def __init__(self, size: int | None, limit: int) -> None:
        told = f"is {size} bytes" if size is not None else "is larger"
        super().__init__("body", f"{told}; the limit is {limit} bytes (server.http.max_body_bytes)")


class NotServed(GatewayError):
    """A path or method the door does not serve (404 or 405): no call, no record."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


def http_status(error: GatewayError) -> int:
    own: int | None = getattr(error, "http_status", None)
    if own is not None:
        return own
    return _STATUS.get(error.code, 500)


def error_headers(error: GatewayError, status: int) -> Headers:
    """`retry-after` when the caller may come back, `x-should-retry` when it should not."""
    retry_after = _retry_after(error)
    headers: Headers = []
    if retry_after is not None:
        headers.append((b"retry-after", str(math.ceil(retry_after)).encode()))
        headers.append((b"retry-after-ms", str(math.ceil(retry_after * 1000)).encode()))
    if isinstance(error, BudgetExceeded) or (status >= 500 and not error.client_may_retry):
        headers.append((b"x-should-retry", b"false"))
    elif error.client_may_retry:
        headers.append((b"x-should-retry", b"true"))
    return headers


def _retry_after(error: GatewayError) -> float | None:
    if isinstance(error, RateLimited):
        return error.retry_after
    if isinstance(error, UpstreamRateLimited):
        return error.retry_after
    return None


def openai_error(error: GatewayError, status: int) -> dict[str, Any]:
    """The `error` object of OpenAI's error body (and of its error event in a stream)."""
    if status == 429 and isinstance(error, BudgetExceeded):
        kind = "insufficient_quota"
    else:
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "api_error")
    return {
        "message": scrub_secrets(error.message),
        "type": kind,
        "param": error.field if isinstance(error, InvalidRequest) else None,
        "code": _OPENAI_CODES.get(error.reason, error.reason.lower()),
    }


def openai_body(error: GatewayError, status: int) -> bytes:
    return orjson.dumps({"error": openai_error(error, status)})


def anthropic_error(error: GatewayError, status: int, request_id: str) -> dict[str, Any]:
    """Anthropic's error body (and the data of its `error` event in a stream)."""
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {
        "type": "error",
        "error": {"type": kind, "message": scrub_secrets(error.message)},
        "request_id": request_id,
    }


def anthropic_body(error: GatewayError, status: int, request_id: str) -> bytes:
    return orjson.dumps(anthropic_error(error, status, request_id))
