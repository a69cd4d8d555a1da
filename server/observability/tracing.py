"""OpenTelemetry traces: a server span per AIService call, a client span per upstream attempt.

The server span comes from the grpc aio server instrumentation, which continues a
caller's `traceparent`; health is excluded (its `Watch` is a `context.write`-style
handler the instrumentation breaks, FACTS.md). Each upstream attempt is a child
span named after the GenAI conventions (`chat <model>`, `gen_ai.*` attributes), so
retries, hedges and fallbacks show as siblings, and its context travels upstream
as `traceparent` (`propagation.py`). Only built when tracing is on: off, there is
no interceptor and no observer at all.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import health_check, negate
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import SpanKind, Status, StatusCode

from server.config import TracingSettings
from server.observability.hooks import AttemptRecord, CallRecord, Observer
from server.observability.propagation import upstream_span

_OPERATION = "chat"


def _processor(settings: TracingSettings, exporter: SpanExporter | None) -> SpanProcessor:
    if exporter is not None:
        # An in-process exporter (tests, benchmarks) sees each span as it ends.
        return SimpleSpanProcessor(exporter)
    if settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
    # Batched: the export (a print, a POST) happens on the processor's thread.
    return BatchSpanProcessor(ConsoleSpanExporter())


class Tracing(Observer):
    """The tracer provider of one gateway, and the `Observer` that makes attempt spans."""

    def __init__(self, settings: TracingSettings, exporter: SpanExporter | None = None) -> None:
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        )
        self._provider.add_span_processor(_processor(settings, exporter))
        self._tracer = self._provider.get_tracer("ai-service")

    def server_interceptor(self) -> grpc.aio.ServerInterceptor:
        interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self._provider, filter_=negate(health_check())
        )
        return interceptor

    def attempt_started(self, call: CallRecord, attempt: AttemptRecord) -> None:
        target = attempt.handle.target
        attributes: dict[str, Any] = {
            gen_ai.GEN_AI_OPERATION_NAME: _OPERATION,
            gen_ai.GEN_AI_SYSTEM: attempt.handle.provider.kind,
            gen_ai.GEN_AI_PROVIDER_NAME: attempt.handle.provider.kind,
            gen_ai.GEN_AI_REQUEST_MODEL: target.upstream_model,
            "ai_service.provider": target.provider,
            "ai_service.deployment": attempt.handle.name,
            "ai_service.attempt": attempt.number,
            "ai_service.fallback": attempt.fallback,
        }
        span = self._tracer.start_span(
            f"{_OPERATION} {target.upstream_model}", kind=SpanKind.CLIENT, attributes=attributes
        )
        attempt.span = span
        upstream_span.set(span)

    def attempt_ended(self, call: CallRecord, attempt: AttemptRecord) -> None:
        upstream_span.set(None)
        span = attempt.span
        if span is None:
            return
        if attempt.error is None:
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_MODEL, attempt.response_model)
            span.set_attribute(gen_ai.GEN_AI_USAGE_INPUT_TOKENS, attempt.input_tokens)
            span.set_attribute(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, attempt.output_tokens)
        else:
            span.set_attribute("error.type", attempt.error)
            span.set_status(Status(StatusCode.ERROR, attempt.error))
        span.end()

    def call_ended(self, call: CallRecord) -> None:
        # Runs inside the instrumentation's server span (its interceptor wraps ours).
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.set_attribute("ai_service.request_id", call.request_id)
        span.set_attribute("ai_service.key_name", call.key)
        if call.route is not None:
            span.set_attribute(gen_ai.GEN_AI_OPERATION_NAME, _OPERATION)
            span.set_attribute(gen_ai.GEN_AI_REQUEST_MODEL, call.route.name)
        served = call.served_by
        if served is not None:
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_MODEL, served.response_model)
            span.set_attribute(gen_ai.GEN_AI_USAGE_INPUT_TOKENS, served.input_tokens)
            span.set_attribute(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, served.output_tokens)
        if call.reason:
            span.set_attribute("error.type", call.reason)

    def shutdown(self) -> None:
        """Export what is buffered, then stop (blocks: call it off the event loop)."""
        self._provider.shutdown()
