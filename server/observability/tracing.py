"""OpenTelemetry traces: a server span per AIService call, a client span per upstream
attempt.

The server span continues a caller's `traceparent` (either door's) and follows the RPC
conventions (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`, for the
HTTP door's calls `ai_service.transport` instead of the gRPC ones; status ERROR only
for the codes that are the server's failure, unset for the caller's own, such as
UNAUTHENTICATED or NOT_FOUND). By default this observer makes it from the call record
the telemetry interceptor keeps anyway: the OTel grpc aio instrumentation
(`server_spans: opentelemetry-grpc`) adds an interceptor that rebuilds handlers and
wraps the servicer context on every call, and measured here it cost ~250 µs per call
even with nothing sampled (bench section 4). Either way the span ends with the same
name, attributes and status: this observer sets them on the instrumentation's span too
(whose own name is the method's path, with a leading `/`, and which never learns of a
call the caller cancelled). Health and reflection get no span either way (the
instrumentation breaks health's `Watch`, a handler that writes through its context
rather than yielding). Each upstream attempt is a child span named after the GenAI
conventions (`chat <model>`, `embeddings <model>`, `gen_ai.*` attributes,
`server.address` and `server.port`, and on failure an `error.type` that is the HTTP
status the upstream answered, or the kind of failure when there was none), so
retries, hedges and fallbacks show as siblings, and its context travels upstream as
`traceparent` (`propagation.py`). Only built when tracing is on: off, there is no
interceptor and no observer at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

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
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ai_service.calls.record import AttemptRecord, CallRecord, Observer
from ai_service.config import ProviderSettings, TracingSettings
from ai_service.observability.conventions import (
    SERVER_ERROR_CODES,
    attempt_error_type,
    operation_name,
    provider_name,
)
from ai_service.providers.http.propagation import upstream_span
from ai_service_protos import ai_service_pb2

_ERROR_TYPE = error_attributes.ERROR_TYPE
_SERVICE = ai_service_pb2.DESCRIPTOR.services_by_name["AIService"].full_name
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = frozenset(_PROPAGATOR.fields)


def _caller_trace(metadata: Sequence[tuple[str, str | bytes]]) -> dict[str, str]:
    """The caller's `traceparent` / `tracestate`, as a carrier for the propagator."""
    return {k: v for k, v in metadata if k in _TRACE_HEADERS and isinstance(v, str)}


def _server(base_url: str) -> tuple[str, int] | None:
    """(`server.address`, `server.port`) of a provider's base URL."""
    url = urlsplit(base_url)
    if url.hostname is None:
        return None
    try:
        port = url.port
    except ValueError:
        port = None
    return url.hostname, port or (443 if url.scheme == "https" else 80)


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
        self._servers: dict[str, tuple[str, int]] = {}

    def follow(self, providers: Iterable[ProviderSettings]) -> None:
        """Where each provider's upstream is (`server.address`, `server.port`)."""
        servers = {p.name: _server(p.base_url) for p in providers}
        self._servers = {name: server for name, server in servers.items() if server is not None}

    def server_interceptor(self) -> grpc.aio.ServerInterceptor | None:
        """The OTel instrumentation's interceptor, when it is the one making server spans."""
        if self._own_server_spans:
            return None
        interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self._provider, filter_=negate(health_check())
        )
        return interceptor

    def _owns(self, call: CallRecord) -> bool:
        """Whether this observer makes the call's server span (the HTTP door's calls
        have no instrumentation's span: always)."""
        return self._own_server_spans or call.transport != "grpc"

    def call_started(self, call: CallRecord) -> None:
        if not self._owns(call):
            # The instrumentation's span is current: its interceptor wraps ours. Its
            # name is the method's path; the conventions' has no leading slash.
            call.span = span = trace.get_current_span()
            span.update_name(f"{_SERVICE}/{call.method}")
            return
        carrier = _caller_trace(call.metadata)
        attributes = (
            {"rpc.system": "grpc", "rpc.service": _SERVICE, "rpc.method": call.method}
            if call.transport == "grpc"
            else {"ai_service.transport": call.transport, "rpc.method": call.method}
        )
        call.span = self._tracer.start_span(
            f"{_SERVICE}/{call.method}",
            context=_PROPAGATOR.extract(carrier) if carrier else None,
            kind=SpanKind.SERVER,
            attributes=attributes,
        )

    def attempt_started(self, call: CallRecord, attempt: AttemptRecord) -> None:
        parent: Span | None = call.span
        if parent is not None and not parent.is_recording():
            # Not sampled: no attempt spans, but the trace still travels upstream.
            upstream_span.set(parent)
            return
        target = attempt.handle.target
        kind = attempt.handle.provider.kind
        operation = operation_name(call.method)
        attributes: dict[str, Any] = {
            gen_ai.GEN_AI_OPERATION_NAME: operation,
            gen_ai.GEN_AI_PROVIDER_NAME: provider_name(kind),
            gen_ai.GEN_AI_SYSTEM: kind,  # deprecated for the provider name; kept a release
            gen_ai.GEN_AI_REQUEST_MODEL: target.upstream_model,
            "ai_service.provider": target.provider,
            "ai_service.deployment": attempt.handle.name,
            "ai_service.attempt": attempt.number,
            "ai_service.fallback": attempt.fallback,
            "ai_service.hedge": attempt.hedge,
        }
        server = self._servers.get(target.provider)
        if server is not None:
            attributes[server_attributes.SERVER_ADDRESS] = server[0]
            attributes[server_attributes.SERVER_PORT] = server[1]
        span = self._tracer.start_span(
            f"{operation} {target.upstream_model}",
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
        if attempt.http_status is not None:
            span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, attempt.http_status)
        if attempt.error is None:
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_MODEL, attempt.response_model)
            span.set_attribute(gen_ai.GEN_AI_USAGE_INPUT_TOKENS, attempt.input_tokens)
            span.set_attribute(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, attempt.output_tokens)
        else:
            error_type = attempt_error_type(attempt)
            span.set_attribute(_ERROR_TYPE, error_type)
            span.set_attribute("ai_service.reason", attempt.error)
            span.set_status(Status(StatusCode.ERROR, attempt.error))
        span.end()

    def call_ended(self, call: CallRecord) -> None:
        span: Span | None = call.span
        if span is None:
            return
        if span.is_recording():
            self._describe(span, call)
            span.set_attribute("rpc.grpc.status_code", call.code.value[0])
            if call.code in SERVER_ERROR_CODES:
                span.set_status(Status(StatusCode.ERROR, call.code.name))
        if self._owns(call):
            span.end()

    @staticmethod
    def _describe(span: Span, call: CallRecord) -> None:
        span.set_attribute("ai_service.request_id", call.request_id)
        span.set_attribute("ai_service.key_name", call.key)
        if call.route is not None:
            span.set_attribute(gen_ai.GEN_AI_OPERATION_NAME, operation_name(call.method))
            span.set_attribute(gen_ai.GEN_AI_REQUEST_MODEL, call.route.name)
        served = call.served_by
        if served is not None:
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_MODEL, served.response_model)
            span.set_attribute(gen_ai.GEN_AI_USAGE_INPUT_TOKENS, served.input_tokens)
            span.set_attribute(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, served.output_tokens)
        if call.code is not grpc.StatusCode.OK:  # what went wrong, whoever's fault it was
            span.set_attribute(_ERROR_TYPE, call.reason or call.code.name)

    def shutdown(self) -> None:
        """Export what is buffered, then stop (blocks: call it off the event loop)."""
        self._provider.shutdown()
