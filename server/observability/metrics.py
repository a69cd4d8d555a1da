"""Prometheus metrics: what the calls did (an `Observer`) and what the deployments are doing.

Labels are bounded by the configuration: method, public model, key *name*, provider,
deployment, status code, error reason (the gateway's fixed set), upstream HTTP status,
and the door a call came through (`transport`: `grpc` or `http`). A
model the caller merely asked for never becomes a label (an unknown name would mint a
new series per typo). Token and latency metrics carry the OpenTelemetry GenAI names
(`gen_ai.client.token.usage` → `gen_ai_client_token_usage`,
`gen_ai.client.operation.duration` → `gen_ai_client_operation_duration_seconds`,
`gen_ai.server.time_to_first_token` → `gen_ai_server_time_to_first_token_seconds`) and
attributes (`gen_ai_operation_name`, `gen_ai_provider_name`; `gen_ai_system`, which the
conventions replaced by the provider name, is kept for one release). Beside `input` and
`output`, the token type is `cache_read`, `cache_write` or `reasoning` for the parts of
those a provider reports (prompt-cache reads and writes, reasoning tokens), on calls
that had any.

A call's overhead is the gateway's own time: its duration less its upstream attempts,
its backoff before retries and its waits for a deployment's slot; those two waits have
histograms of their own.

Deployment state (circuit, upstream requests in flight and queued, connection-pool
use), whether each model can be served, and the process's CPU, memory and file
descriptors are read when scraped, so they cost the data path nothing.

Several worker processes: set `PROMETHEUS_MULTIPROC_DIR` to an empty directory for
all of them; prometheus-client then keeps counters in shared files and `/metrics`
(any worker's) sums them. The scrape-time deployment gauges are the answering
worker's own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ai_service.calls.record import AttemptRecord, CallRecord, Observer
from ai_service.config import MetricsSettings, ProviderSettings, split_host_port
from ai_service.limits.ledger import UNPRICED
from ai_service.limits.prices import NANOS
from ai_service.limits.shared_state import SharedRedis
from ai_service.observability.conventions import operation_name, provider_name
from ai_service.resilience import CircuitState

if TYPE_CHECKING:
    from aiohttp import web
from ai_service.routing.router import DeploymentHandle, Router

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# The gateway's own share of a call is micro- to milliseconds.
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
# The GenAI conventions' advised boundaries for token counts.
_TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))
#: How often a worker's call metrics reach prometheus-client (and, with several workers,
#: their shared files) between scrapes; a scrape of the worker itself flushes first.
FLUSH_SECONDS = 1.0
_CIRCUIT_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


def multiprocess_dir() -> str | None:
    # prometheus-client itself switches to shared files on this variable at import.
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


M = TypeVar("M", Counter, Gauge, Histogram)


class _Pending(Generic[M]):
    """A metric's updates since the last `flush`, by label values, in plain Python.

    prometheus-client takes a lock and, for `labels()`, validates and stringifies on
    every update; a call makes about ten. Here the hot path adds to a dict entry and
    `flush` (on the event loop, before each scrape and every second: with several
    workers their shared files are that fresh) hands the sums to the metric's children,
    each looked up once. Label values are bounded sets (methods, models, key names,
    codes, deployments), as they must be for Prometheus anyway."""

    __slots__ = ("_children", "_metric", "_pending")

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}
        self._pending: dict[tuple[str, ...], list[float]] = {}

    def child(self, values: tuple[str, ...]) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for values, entry in pending.items():
            self._apply(self.child(values), entry)

    def _apply(self, child: M, entry: list[float]) -> None:
        raise NotImplementedError


S = TypeVar("S", Counter, Gauge)


class _Sums(_Pending[S]):
    """A counter's increments, or a gauge's net change (a live sum across workers)."""

    def add(self, values: tuple[str, ...], amount: float = 1.0) -> None:
        entry = self._pending.get(values)
        if entry is None:
            self._pending[values] = [amount]
        else:
            entry[0] += amount

    def _apply(self, child: S, entry: list[float]) -> None:
        child.inc(entry[0])


class _HistogramUpdates(_Pending[Histogram]):
    """Observations as counts per bucket and their sum: `[n_0, …, n_inf, sum]`."""

    __slots__ = ("_bounds",)

    def __init__(self, metric: Histogram, buckets: Sequence[float]) -> None:
        super().__init__(metric)
        self._bounds = (*buckets, math.inf)

    def observe(self, values: tuple[str, ...], amount: float) -> None:
        entry = self._pending.get(values)
        if entry is None:
            entry = self._pending[values] = [0.0] * (len(self._bounds) + 1)
        # The first bucket whose bound is >= amount, as prometheus-client counts it.
        entry[bisect_left(self._bounds, amount)] += 1
        entry[-1] += amount

    def _apply(self, child: Histogram, entry: list[float]) -> None:
        # prometheus-client has no public way to add n observations at once; its
        # children keep a (non-cumulative) value per bucket and one for the sum.
        buckets = child._buckets
        for at, count in enumerate(entry[:-1]):
            if count:
                buckets[at].inc(count)
        child._sum.inc(entry[-1])


class Metrics(Observer):
    """The call metrics, as an `Observer` of every call."""

    def __init__(self, registry: CollectorRegistry) -> None:
        updates: list[_Pending[Any]] = []

        def counter(name: str, doc: str, labels: Sequence[str]) -> _Sums[Counter]:
            metric = _Sums(Counter(name, doc, labels, registry=registry))
            updates.append(metric)
            return metric

        def histogram(
            name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
        ) -> _HistogramUpdates:
            metric = _HistogramUpdates(
                Histogram(name, doc, labels, registry=registry, buckets=buckets), buckets
            )
            updates.append(metric)
            return metric

        self.requests = counter(
            "ai_gateway_requests",
            "AIService calls by outcome: gRPC code and the gateway's reason (ErrorInfo); "
            "the HTTP door's calls too, by the gRPC code of their error (transport http).",
            ("method", "model", "key", "code", "reason", "transport"),
        )
        self.duration = histogram(
            "ai_gateway_request_duration_seconds",
            "Whole AIService calls, as the gateway saw them.",
            ("method", "model", "code", "transport"),
            _LATENCY_BUCKETS,
        )
        self.overhead = histogram(
            "ai_gateway_overhead_duration_seconds",
            "Time a call spent in the gateway itself: its duration less its upstream "
            "attempts, its backoff before retries and its waits for a deployment's slot.",
            ("method",),
            _OVERHEAD_BUCKETS,
        )
        self.backoff = histogram(
            "ai_gateway_retry_backoff_duration_seconds",
            "Calls that waited before a retry (backoff, Retry-After): the time they waited.",
            ("method", "model"),
            _LATENCY_BUCKETS,
        )
        self.slot_wait = histogram(
            "ai_gateway_slot_wait_duration_seconds",
            "Calls that waited for a deployment's concurrency slot: the time they waited.",
            ("method", "model"),
            _LATENCY_BUCKETS,
        )
        self.upstream = histogram(
            "gen_ai_client_operation_duration_seconds",
            "Upstream attempts (gen_ai.client.operation.duration).",
            (*_GEN_AI, "gen_ai_request_model", "provider", "deployment", "error_type"),
            _LATENCY_BUCKETS,
        )
        self.first_token = histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Streams that produced output: call start to the first chunk with some "
            "(gen_ai.server.time_to_first_token).",
            ("gen_ai_operation_name", "gen_ai_provider_name", "model"),
            _LATENCY_BUCKETS,
        )
        self.tokens = histogram(
            "gen_ai_client_token_usage",
            "Tokens per served call, input and output (gen_ai.client.token.usage).",
            (*_GEN_AI, "gen_ai_request_model", "gen_ai_token_type", "model", "deployment"),
            _TOKEN_BUCKETS,
        )
        self.retries = counter(
            "ai_gateway_retries",
            "Upstream attempts after a failed one (hedges are counted apart).",
            ("model",),
        )
        self.hedges = counter(
            "ai_gateway_hedges",
            "Upstream attempts started beside a slow one (hedge_after_ms).",
            ("model",),
        )
        self.fallbacks = counter(
            "ai_gateway_fallbacks",
            "Upstream attempts on a fallback model's deployment.",
            ("model", "deployment"),
        )
        self.cache = counter(
            "ai_gateway_cache_lookups", "Response-cache lookups.", ("model", "result")
        )
        self.rate_limited = counter(
            "ai_gateway_rate_limited", "Calls refused by the key's rate limit.", ("key",)
        )
        self.in_flight = _Sums(
            Gauge(
                "ai_gateway_calls_in_flight",
                "AIService calls (and streams) being served.",
                ("method", "transport"),
                registry=registry,
                multiprocess_mode="livesum",
            )
        )
        updates.append(self.in_flight)
        self.spend = _SpendMetrics(counter)
        self._updates = tuple(updates)

    def flush(self) -> None:
        """Hand every update since the last flush to prometheus-client (on the loop)."""
        for metric in self._updates:
            metric.flush()

    def call_started(self, call: CallRecord) -> None:
        self.in_flight.add((call.method, call.transport), 1)

    def attempt_started(self, call: CallRecord, attempt: AttemptRecord) -> None:
        if attempt.hedge:
            self.hedges.add((call.model,))
        elif attempt.number > 1:
            self.retries.add((call.model,))
        if attempt.fallback:
            self.fallbacks.add((call.model, attempt.handle.name))

    def attempt_ended(self, call: CallRecord, attempt: AttemptRecord) -> None:
        handle = attempt.handle
        self.upstream.observe(
            (
                *_gen_ai(call, handle),
                handle.target.upstream_model,
                handle.target.provider,
                handle.name,
                attempt.error or "",
            ),
            attempt.upstream_seconds,
        )

    def call_ended(self, call: CallRecord) -> None:
        method, model, code, transport = call.method, call.model, call.code.name, call.transport
        self.in_flight.add((method, transport), -1)
        self.requests.add((method, model, call.key, code, call.reason, transport))
        self.duration.observe((method, model, code, transport), call.duration)
        self.overhead.observe((method,), call.overhead_seconds)
        if call.backoff_seconds:
            self.backoff.observe((method, model), call.backoff_seconds)
        if call.queued_seconds:
            self.slot_wait.observe((method, model), call.queued_seconds)
        if call.reason == "RATE_LIMITED":
            self.rate_limited.add((call.key,))
        if call.cache_hit is not None:
            self.cache.add((model, "hit" if call.cache_hit else "miss"))
        if call.first_token is not None:
            handle = call.deployment
            kind = provider_name(handle.provider.kind) if handle is not None else ""
            self.first_token.observe(
                (operation_name(method), kind, model), call.first_token - call.started
            )
        served = call.served_by
        if served is not None and call.code.name == "OK":
            handle = served.handle
            labels = (*_gen_ai(call, handle), handle.target.upstream_model)
            self.tokens.observe((*labels, "input", model, handle.name), served.input_tokens)
            self.tokens.observe((*labels, "output", model, handle.name), served.output_tokens)
            # Parts of those, observed only when the provider reported them: three more
            # values of the token-type label, no new label.
            for kind, tokens in (
                ("cache_read", served.cached_tokens),
                ("cache_write", served.cache_write_tokens),
                ("reasoning", served.reasoning_tokens),
            ):
                if tokens:
                    self.tokens.observe((*labels, kind, model, handle.name), tokens)
        self.spend.call_ended(call)


# --- cost: spend, tokens and budgets by key -------------------------------------------------

#: The token kinds of `ai_gateway_tokens_total`, by their place in a `Spend`: `input` and
#: `output` are all of a call's prompt and generated tokens, the others parts of those.
_TOKEN_KINDS = (
    ("input", 1),
    ("output", 2),
    ("cache_read", 3),
    ("cache_write", 4),
    ("reasoning", 5),
)


class _SpendMetrics:
    """What calls were charged, by key (and team) and model: long-term spend history
    lives here, in the metrics system, rather than in a table of calls."""

    def __init__(self, counter: Callable[[str, str, Sequence[str]], _Sums[Counter]]) -> None:
        self.cost = counter(
            "ai_gateway_cost",
            "What calls cost, in the currency of the price list (cost.currency); estimated "
            "where the provider reported no usage; unpriced calls add nothing.",
            ("key", "team", "model"),
        )
        self.tokens = counter(
            "ai_gateway_tokens",
            "Tokens calls were charged by kind: input and output, and of those cache_read, "
            "cache_write and reasoning.",
            ("key", "model", "kind"),
        )
        self.unpriced = counter(
            "ai_gateway_unpriced_calls",
            "Calls served by a deployment without a price (cost.prices).",
            ("model",),
        )
        self.over_soft = counter(
            "ai_gateway_budget_soft_exceeded",
            "Calls served while a key or team was over its soft budget.",
            ("scope",),
        )
        self.refused = counter(
            "ai_gateway_budget_refused",
            "Calls refused by a key's or a team's hard budget.",
            ("scope",),
        )

    def call_ended(self, call: CallRecord) -> None:
        spend = call.spend
        if spend is not None:
            key, model, counts = call.key, call.model, spend.counts
            if spend.cost:
                self.cost.add((key, call.team, model), spend.cost / NANOS)
            for kind, at in _TOKEN_KINDS:
                if counts[at]:
                    self.tokens.add((key, model, kind), counts[at])
            if counts[UNPRICED]:
                self.unpriced.add((model,))
        for scope in call.over_soft:
            self.over_soft.add((scope,))
        if call.budget_refused:
            self.refused.add((call.budget_refused,))


#: The GenAI attribute labels: operation and provider name, and the provider name's
#: deprecated predecessor, `gen_ai_system` (kept for one release).
_GEN_AI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_system")


def _gen_ai(call: CallRecord, handle: DeploymentHandle) -> tuple[str, str, str]:
    kind = handle.provider.kind
    return operation_name(call.method), provider_name(kind), kind


class DeploymentCollector(Collector):
    """Deployment and model state, read at scrape time from the router's live objects."""

    def __init__(self, router: Router, providers: Iterable[ProviderSettings]) -> None:
        self.follow(router, providers)

    def follow(self, router: Router, providers: Iterable[ProviderSettings]) -> None:
        """Report this router's models and deployments from now on (after a reload)."""
        self._router = router
        self._deployments = router.deployments
        self._pool_max = {p.name: p.pool.max_connections for p in providers}

    def collect(self) -> Iterator[Metric]:
        serving = GaugeMetricFamily(
            "ai_gateway_model_serving",
            "1 while a call to the model would find a deployment to take it (one of its "
            "own or its fallbacks' whose circuit admits calls), as gRPC health says; else 0.",
            labels=("model",),
        )
        router = self._router
        for route in router.routes:
            serving.add_metric((route.name,), float(router.can_serve(route)))
        yield serving
        circuit = GaugeMetricFamily(
            "ai_gateway_circuit_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
            labels=("deployment",),
        )
        in_flight = GaugeMetricFamily(
            "ai_gateway_upstream_in_flight",
            "Upstream requests in flight per deployment.",
            labels=("deployment",),
        )
        queued = GaugeMetricFamily(
            "ai_gateway_upstream_queued",
            "Calls waiting for a deployment's concurrency slot.",
            labels=("deployment",),
        )
        in_use: dict[str, int] = defaultdict(int)
        for handle in self._deployments:
            circuit.add_metric((handle.name,), _CIRCUIT_VALUE[handle.breaker.state])
            in_flight.add_metric((handle.name,), handle.limiter.in_flight)
            queued.add_metric((handle.name,), handle.limiter.queued)
            # An HTTP/1.1 request in flight holds one pooled connection.
            in_use[handle.target.provider] += handle.limiter.in_flight
        pool = GaugeMetricFamily(
            "ai_gateway_upstream_connections_in_use",
            "Pooled upstream connections busy per provider (one per request in flight).",
            labels=("provider",),
        )
        pool_max = GaugeMetricFamily(
            "ai_gateway_upstream_connections_max",
            "The provider's configured pool size (pool.max_connections).",
            labels=("provider",),
        )
        for provider, limit in self._pool_max.items():
            pool.add_metric((provider,), in_use[provider])
            pool_max.add_metric((provider,), limit)
        yield from (circuit, in_flight, queued, pool, pool_max)


class MetricsServer:
    """`GET /metrics` on its own HTTP port, rendered off the event loop."""

    def __init__(
        self, settings: MetricsSettings, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._call_metrics = metrics
        self._runner: web.AppRunner | None = None
        self._flushing: asyncio.TimerHandle | None = None
        self.port = 0

    async def start(self) -> None:
        # aiohttp's server loads with the metrics port, not with every gateway.
        from aiohttp import web

        self._flush_each_second()
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = split_host_port(self._settings.listen)
        site = web.TCPSite(runner, host, port, reuse_port=multiprocess_dir() is not None)
        try:
            await site.start()
        except OSError as exc:
            # Metrics are never worth an inference outage: say so loudly and serve on.
            await runner.cleanup()
            log.error(
                "metrics NOT served: cannot listen",
                extra={"address": self._settings.listen, "error": exc.strerror},
            )
            return
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("metrics listening", extra={"address": f"{host}:{self.port}"})

    def _flush_each_second(self) -> None:
        # Another worker's scrape reads this one's shared files: keep them a second fresh.
        self._call_metrics.flush()
        self._flushing = asyncio.get_running_loop().call_later(
            FLUSH_SECONDS, self._flush_each_second
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web  # loaded by start(): a lookup

        self._call_metrics.flush()
        # Rendering walks every series (and, multiprocess, reads files): a thread's job.
        body = await asyncio.get_running_loop().run_in_executor(
            None, generate_latest, self._registry
        )
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop(self) -> None:
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        self._call_metrics.flush()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def registries() -> tuple[CollectorRegistry, CollectorRegistry]:
    """(where metrics are recorded, what /metrics serves): the same registry in one
    process; with PROMETHEUS_MULTIPROC_DIR, a served one that sums every worker's files."""
    recording = CollectorRegistry()
    if multiprocess_dir() is None:
        return recording, recording
    served = CollectorRegistry()
    MultiProcessCollector(served)  # type: ignore[no-untyped-call]
    return recording, served


def watch_process(served: CollectorRegistry) -> None:
    """`process_*` series (CPU seconds, resident memory, open file descriptors, start
    time) of the process answering the scrape, read from /proc when scraped."""
    ProcessCollector(registry=served)


class SharedStateCollector(Collector):
    """Failed Redis calls, and whether Redis is treated as down (limits and cache then
    follow `shared_state.on_failure` for every call)."""

    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared

    def collect(self) -> Iterator[Metric]:
        failures = CounterMetricFamily(
            "ai_gateway_shared_state_failures",
            "Redis calls that failed or timed out; the on_failure policy applied to them.",
        )
        failures.add_metric((), self._shared.failures)
        yield failures
        mode = GaugeMetricFamily(
            "ai_gateway_shared_state_failure_mode",
            "1 while Redis is treated as down: on_failure applies to every call without asking it.",
        )
        mode.add_metric((), float(self._shared.failure_mode))
        yield mode
