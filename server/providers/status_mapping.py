"""Upstream HTTP error answers → the gateway's errors, for every provider at once.

The table is the one docs/errors.md shows. The upstream's own message is passed on
(it tells the caller what was wrong with the request) with every provider key
scrubbed out of it and then cut to a sane length (`caller_message`: in that order, or
a key across the cut would survive as a prefix).
"""

from __future__ import annotations

import datetime
import email.utils
import math
import time
from typing import Any

import orjson

from ai_service.errors import (
    UpstreamAuth,
    UpstreamError,
    UpstreamInvalidRequest,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    scrub_secrets,
)

MAX_MESSAGE_CHARS = 512


def error_from_status(
    status: int,
    body: bytes,
    *,
    retry_after: str | None,
    provider: str,
) -> UpstreamError:
    """The gateway error for an upstream answer with a non-2xx `status`."""
    detail = caller_message(upstream_message(body))
    message = f"upstream {provider!r} answered HTTP {status}: {detail}"
    if status in (401, 403):
        return UpstreamAuth(f"upstream {provider!r} refused the gateway's credentials ({status})")
    if status == 402:  # Anthropic's billing_error: the gateway's account, as 401/403 are
        return UpstreamAuth(f"upstream {provider!r} refused the gateway's account: {detail}")
    if status == 404:
        return UpstreamNotFound(message)
    if status == 408:
        return UpstreamTimeout(message)
    if status == 429:
        return UpstreamRateLimited(message, retry_after=parse_retry_after(retry_after))
    if 400 <= status < 500:  # 400, 413, 422 and the rest: the request as sent
        return UpstreamInvalidRequest(message)
    return UpstreamUnavailable(message)  # 5xx, Anthropic's 529, anything unexpected


def upstream_message(body: bytes) -> str:
    """The human message inside an error body, in OpenAI, Anthropic or Ollama shape."""
    try:
        payload: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip() or "(empty body)"
    return message_in_error_payload(payload)


def caller_message(text: str) -> str:
    """Upstream text fit to pass on: no provider key in it, and not too long."""
    text = scrub_secrets(text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


def message_in_error_payload(payload: Any) -> str:
    # OpenAI {"error": {"message": …}}, Anthropic {"type": "error", "error":
    # {"type": …, "message": …}}, Ollama {"error": "…"}.
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, str):
            return error
        if isinstance(error, dict):
            message = error.get("message")
            kind = error.get("type") or error.get("code")
            if isinstance(message, str):
                return f"{message} ({kind})" if isinstance(kind, str) else message
    return orjson.dumps(payload).decode()


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # float() also takes `inf` and `nan`, which are no delay
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an asctime date names no zone: HTTP dates are all UTC
        when = when.replace(tzinfo=datetime.UTC)
    return max(when.timestamp() - time.time(), 0.0)
