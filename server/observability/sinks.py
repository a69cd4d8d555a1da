"""One gateway's observability, built from `observability` in the config: metrics,
tracing, the access log and the audit log as call observers, the calls in flight that
report to them (over every door) and the interceptors that feed them, the `/metrics`
server, and their orderly close (the audit queue drained last)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from opentelemetry.sdk.trace.export import SpanExporter

from ai_service.calls.record import Observer
from ai_service.config import ObservabilitySettings, ProviderSettings
from ai_service.entry.calls import OpenCalls
from ai_service.interceptors.arrival import Arrivals
from ai_service.interceptors.telemetry import TelemetryInterceptor
from ai_service.limits.shared_state import SharedRedis
from ai_service.observability.access import AccessLog
from ai_service.observability.audit import AuditLog
from ai_service.observability.metrics import (
    DeploymentCollector,
    Metrics,
    MetricsServer,
    SharedStateCollector,
    registries,
    watch_process,
)
from ai_service.observability.tracing import Tracing
from ai_service.routing.router import Router


class Observability:
    def __init__(
        self, settings: ObservabilitySettings, span_exporter: SpanExporter | None = None
    ) -> None:
        """`span_exporter` (tests, benchmarks) turns tracing on with that exporter."""
        self._settings = settings
        self._recording, self._served = registries()
        self.metrics = Metrics(self._recording) if settings.metrics.enabled else None
        self.metrics_server: MetricsServer | None = None
        self._deployments: DeploymentCollector | None = None
        tracing_on = span_exporter is not None or settings.tracing.exporter != "none"
        self.tracing = Tracing(settings.tracing, span_exporter) if tracing_on else None
        self.access_log = AccessLog(settings.access_log) if settings.access_log.enabled else None
        self.audit = AuditLog(settings.audit) if settings.audit.path is not None else None
        self.observers: tuple[Observer, ...] = tuple(
            o for o in (self.metrics, self.tracing, self.access_log, self.audit) if o is not None
        )
        #: The calls in flight, over every door, and the records they report to.
        self.calls = OpenCalls(self.observers)
        self._telemetry: TelemetryInterceptor | None = None

    def interceptors(self, arrivals: Arrivals) -> list[grpc.aio.ServerInterceptor]:
        """First in the call order. With `server_spans: opentelemetry-grpc` the OTel
        interceptor wraps ours, so its server span is current while the call runs.
        `arrivals`: the bounds on the wait for a call's request message."""
        instrumentation = self.tracing.server_interceptor() if self.tracing is not None else None
        tracing = [instrumentation] if instrumentation is not None else []
        self._telemetry = TelemetryInterceptor(self.calls, arrivals)
        return [*tracing, self._telemetry]

    async def calls_ended(self) -> None:
        """Until every call, through either door, has ended and been recorded."""
        await self.calls.ended()

    def grace_ended(self) -> None:
        """The stopping server's grace is over: the calls it cancels now were cut by it."""
        self.calls.grace_ended = True

    async def start(
        self,
        router: Router,
        providers: Sequence[ProviderSettings],
        shared_state: SharedRedis | None = None,
    ) -> None:
        if self.tracing is not None:
            self.tracing.follow(providers)
        if self.metrics is None:
            return
        self._deployments = DeploymentCollector(router, providers)
        self._served.register(self._deployments)
        watch_process(self._served)
        if shared_state is not None:
            self._served.register(SharedStateCollector(shared_state))
        self.metrics_server = MetricsServer(self._settings.metrics, self._served, self.metrics)
        await self.metrics_server.start()

    def follow(self, router: Router, providers: Sequence[ProviderSettings]) -> None:
        """After a config reload: report the new models, deployments and providers."""
        if self.tracing is not None:
            self.tracing.follow(providers)
        if self._deployments is not None:
            self._deployments.follow(router, providers)

    async def close(self) -> None:
        """After the gRPC server stopped and `calls_ended`: nothing is recorded after."""
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        loop = asyncio.get_running_loop()
        if self.tracing is not None:
            await loop.run_in_executor(None, self.tracing.shutdown)
        if self.audit is not None:
            await loop.run_in_executor(None, self.audit.close)
