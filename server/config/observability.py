"""Metrics, traces, the access log and the audit log."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ai_service.config.base import StrictSettings
from ai_service.config.network import split_host_port


class MetricsSettings(StrictSettings):
    """Prometheus `/metrics`, served over HTTP on its own port (not the gRPC one)."""

    enabled: bool = True
    #: HOST:PORT of the metrics endpoint (`--metrics-listen` overrides).
    listen: str = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _listen_parses(cls, listen: str) -> str:
        split_host_port(listen)
        return listen


class TracingSettings(StrictSettings):
    """OpenTelemetry traces. `none` installs no instrumentation at all (it costs ~40% RPS)."""

    exporter: Literal["none", "console", "otlp"] = "none"
    #: OTLP over HTTP (protobuf): the collector's traces URL.
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    #: Share of new traces sampled; a caller's `traceparent` decides for its own traces.
    sample_ratio: float = Field(1.0, ge=0, le=1)
    #: The `service.name` resource attribute.
    service_name: str = Field("ai-service", min_length=1)
    #: Who makes each call's server span: `gateway` (the telemetry interceptor that
    #: already sees every call) or `opentelemetry-grpc` (the OTel grpc aio
    #: instrumentation, an extra interceptor that costs far more per call, sampled or
    #: not: bench section 4).
    server_spans: Literal["gateway", "opentelemetry-grpc"] = "gateway"


class AuditSettings(StrictSettings):
    """An append-only JSON-lines record per call; off while `path` is unset."""

    path: str | None = None
    #: Rotate when the file would grow past this many bytes; 0 never rotates.
    max_bytes: int = Field(100 * 1024 * 1024, ge=0)
    #: Rotated files kept (`audit.jsonl.1` …); older ones are deleted.
    backup_count: int = Field(5, ge=0)
    #: Also record the prompt and the answer, after redaction (see `redaction`).
    include_prompts: bool = False
    #: Calls refused before authentication get no record each: one summary record
    #: per this many seconds counts them by reason.
    refusal_summary_seconds: float = Field(10.0, gt=0)


class AccessLogSettings(StrictSettings):
    """One log line per AIService call (logger `ai_service.access`, level info)."""

    enabled: bool = True
    #: Share of successful calls logged; a call that failed is always logged.
    success_sample_ratio: float = Field(1.0, ge=0, le=1)


class ObservabilitySettings(StrictSettings):
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    access_log: AccessLogSettings = Field(default_factory=AccessLogSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
