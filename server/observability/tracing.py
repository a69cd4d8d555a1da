"""OpenTelemetry traces: a server span per AIService call, a client span per upstream
attempt.

The server span continues a caller's `traceparent` and follows the RPC conventions
(`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`). By default this
observer makes it from the call record the telemetry interceptor keeps anyway: the OTel
grpc aio instrumentation (`server_spans: opentelemetry-grpc`) adds an interceptor that
rebuilds handlers and wraps the servicer context on every call, and measured here it
cost ~250 µs per call even with nothing sampled (bench section 4). Health and reflection
get no span either way (the instrumentation breaks health's `Watch`, a handler that
writes through its context rather than yielding). Each upstream attempt is a child span
named after the GenAI conventions (`chat <model>`, `gen_ai.*` attributes), so retries,
hedges and fallbacks show as siblings, and its context travels upstream as `traceparent`
(`propagation.py`). Only built when tracing is on: off, there is no interceptor and no
observer at all.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ai_service.calls.record import AttemptRecord, CallRecord, Observer
from ai_service.config import TracingSettings
from ai_service.providers.http.propagation import upstream_span
from ai_service_protos import ai_service_pb2

_OPERATION = "chat"
_SERVICE = ai_service_pb2.DESCRIPTOR.services_by_name["AIService"].full_name
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = frozenset(_PROPAGATOR.fields)


def _caller_trace(metadata: Sequence[tuple[str, str | bytes]]) -> dict[str, str]:
    """The caller's `traceparent` / `tracestate`, as a carrier for the propagator."""
    return {k: v for k, v in metadata if k in _TRACE_HEADERS and isinstance(v, str)}


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
        self._own_server_spans = settings.server_spans == "gateway"

    def server_interceptor(self) -> grpc.aio.ServerInterceptor | None:
        """The OTel instrumentation's interceptor, when it is the one making server spans."""
        if self._own_server_spans:
            return None
        interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self._provider, filter_=negate(health_check())
        )
        return interceptor

    def call_started(self, call: CallRecord) -> None:
        if not self._own_server_spans:
            # The instrumentation's span is current: its interceptor wraps ours.
            call.span = trace.get_current_span()
            return
        carrier = _caller_trace(call.metadata)
        call.span = self._tracer.start_span(
            f"{_SERVICE}/{call.method}",
            context=_PROPAGATOR.extract(carrier) if carrier else None,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": _SERVICE, "rpc.method": call.method},
        )

    def attempt_started(self, call: CallRecord, attempt: AttemptRecord) -> None:
        parent: Span | None = call.span
        if parent is not None and not parent.is_recording():
            # Not sampled: no attempt spans, but the trace still travels upstream.
            upstream_span.set(parent)
            return
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
            f"{_OPERATION} {target.upstream_model}",
            context=set_span_in_context(parent) if parent is not None else None,
            kind=SpanKind.CLIENT,
            attributes=attributes,
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
        span: Span | None = call.span
        if span is None:
            return
        if span.is_recording():
            self._describe(span, call)
        if self._own_server_spans:
            span.set_attribute("rpc.grpc.status_code", call.code.value[0])
            if call.code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, call.code.name))
            span.end()

    @staticmethod
    def _describe(span: Span, call: CallRecord) -> None:
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
