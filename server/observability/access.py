"""The access log: one line per AIService call, at info, on logger `ai_service.access`.

Every call that failed is logged, whichever door it came through (`transport`): refused
before authentication, refused by a limit or the policy, failed upstream, cut
mid-stream, cancelled. Successful calls are logged at
`success_sample_ratio` (1.0: all). A line says who (request id, key name), what (method,
model asked for, routed and served, deployment), how it went (attempts, status and
reason, the upstream's HTTP status on the last attempt) and what it cost (latency, time
to first token for streams, tokens). It goes through the process's log handler, so it
is JSON like every other line (or `key=value` with `--log-format text`), scrubbed of
secrets; a caller's text (the model name it asked for) is quoted when it holds
anything but printable characters, so it cannot forge a line.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import grpc

from ai_service.calls.record import CallRecord, Observer
from ai_service.config import AccessLogSettings

log = logging.getLogger("ai_service.access")


def _printable(text: str) -> str:
    return text if text.isprintable() else repr(text)


def access_entry(call: CallRecord) -> dict[str, Any]:
    """The fields of a call's access line."""
    attempt = call.last_attempt
    handle = call.deployment
    served = call.served_by
    output, estimated = call.output_tokens()
    entry: dict[str, Any] = {
        "request_id": call.request_id,
        "key": call.key,
        "method": call.method,
        "transport": call.transport,
        "model_requested": _printable(call.model_requested),
        "model": call.model,
        "model_served": call.model_served,
        "deployment": handle.name if handle is not None else "",
        "attempts": len(call.attempts),
        "status": call.code.name,
        "reason": call.reason,
        "upstream_status": attempt.http_status if attempt is not None else None,
        "latency_ms": round(call.duration * 1000, 3),
        "input_tokens": served.input_tokens if served is not None else 0,
        "output_tokens": output,
    }
    if estimated:
        entry["output_tokens_estimated"] = True
    if call.streaming:
        first = call.first_token
        entry["ttft_ms"] = round((first - call.started) * 1000, 3) if first is not None else None
        entry["chunks"] = call.chunks_delivered
    if call.cache_hit:
        entry["cache_hit"] = True
    return entry


class AccessLog(Observer):
    """An `Observer` that logs a line when a call ends."""

    def __init__(self, settings: AccessLogSettings) -> None:
        self._ratio = settings.success_sample_ratio

    def call_ended(self, call: CallRecord) -> None:
        sampled_out = self._ratio < 1.0 and random.random() >= self._ratio
        if sampled_out and call.code is grpc.StatusCode.OK:
            return
        if log.isEnabledFor(logging.INFO):
            log.info("call", extra=access_entry(call))
