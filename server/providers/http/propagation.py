"""Carries the caller's trace onward: `traceparent` on the upstream HTTP request.

The tracing observer names the span of the attempt about to go upstream; the HTTP
seam (`server/providers/http.py`) asks for the headers to add. With tracing off
nothing is ever named, and the seam's cost is one context-variable read.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar

from opentelemetry.trace import Span, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()

#: The span of the upstream attempt this task is making, if traced. Set per attempt
#: (and cleared after it) with `set`, not reset by token: a stream's attempt may be
#: closed from another task than the one that opened it.
upstream_span: ContextVar[Span | None] = ContextVar("upstream_span", default=None)


_UNTRACED: Mapping[str, str] = {}


def trace_headers() -> Mapping[str, str]:
    """`traceparent` (and `tracestate`) when the attempt is traced; else empty."""
    span = upstream_span.get()
    if span is None:
        return _UNTRACED
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
    return carrier


def with_trace_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers`, plus `traceparent` (and `tracestate`) when the attempt is traced."""
    extra = trace_headers()
    return {**headers, **extra} if extra else headers
