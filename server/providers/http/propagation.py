"""What an upstream request carries of its call, and what it tells the call back.

Onward: the call's `x-request-id`, and its trace context as `traceparent` (and
`tracestate`). With tracing on, the tracing observer names the span of the attempt
about to go upstream; with tracing off, the caller's own `traceparent` passes through
unchanged (the gateway is then no hop of the trace). Back: the HTTP status the
upstream answered with, for the attempt's record (the access log, spans).

The call layer puts the attempt in `upstream_attempt` for the HTTP seam
(`server/providers/http/`) and the endpoint (`endpoint.py`) to read; outside an
AIService call there is none, and the seam's cost is two context-variable reads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Protocol

from opentelemetry.trace import Span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()

REQUEST_ID_HEADER = "x-request-id"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# W3C trace context: what a caller's headers must look like to be passed on as they are
# (a bad one is dropped, as a tracer would drop it). tracestate: at most 32 members of
# printable ASCII, 512 characters being the most a tracer must keep.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_TRACESTATE = re.compile(r"[\x20-\x7e]{1,512}")


class UpstreamAttempt(Protocol):
    """The call layer's record of one attempt, as far as the HTTP side needs it."""

    #: The headers the attempt's requests carry for its call (request id, trace).
    @property
    def forwarded(self) -> Mapping[str, str]: ...

    #: The status of the attempt's last upstream HTTP answer (None: none came).
    http_status: int | None


#: The attempt this task is making, if any (set and cleared by the call layer).
upstream_attempt: ContextVar[UpstreamAttempt | None] = ContextVar("upstream_attempt", default=None)

#: The span of the upstream attempt this task is making, if traced. Set per attempt
#: (and cleared after it) with `set`, not reset by token: a stream's attempt may be
#: closed from another task than the one that opened it.
upstream_span: ContextVar[Span | None] = ContextVar("upstream_span", default=None)


_NOTHING: Mapping[str, str] = {}


def forwarded_headers(
    request_id: str, metadata: Sequence[tuple[str, str | bytes]]
) -> dict[str, str]:
    """What every upstream request of a call carries: its request id, and the caller's
    trace context when it is well formed (replaced by the attempt's span when traced)."""
    headers = {REQUEST_ID_HEADER: request_id}
    for name, value in metadata:
        if name == TRACEPARENT and isinstance(value, str) and _TRACEPARENT.fullmatch(value):
            headers[TRACEPARENT] = value
    if TRACEPARENT in headers:  # a tracestate means nothing without its traceparent
        for name, value in metadata:
            if name == TRACESTATE and isinstance(value, str) and _TRACESTATE.fullmatch(value):
                headers[TRACESTATE] = value
    return headers


def trace_headers() -> Mapping[str, str]:
    """The headers the current attempt's requests carry; empty outside an attempt."""
    attempt = upstream_attempt.get()
    span = upstream_span.get()
    if span is None:
        return attempt.forwarded if attempt is not None else _NOTHING
    carrier: dict[str, str] = dict(attempt.forwarded) if attempt is not None else {}
    carrier.pop(TRACESTATE, None)  # the span's own, if it has one, replaces the caller's
    _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
    return carrier


def with_trace_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers`, plus those of the current attempt (`trace_headers`)."""
    extra = trace_headers()
    return {**headers, **extra} if extra else headers


def note_http_status(status: int) -> None:
    """The upstream answered the current attempt with `status`."""
    attempt = upstream_attempt.get()
    if attempt is not None:
        attempt.http_status = status
