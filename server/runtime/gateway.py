"""Builds the gateway's grpc.aio server and runs it until a signal drains it.

The interceptor list below is the order a call passes through: the request's
arrival (a bound on the wait for it), tracing (when on) and telemetry (request id,
call record), authentication, then rate limiting, then the servicer. Health (the
server, AIService and each public model) and reflection are served beside AIService
and stay open to everyone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace.export import SpanExporter

from ai_service.config import (
    ADMIN_SERVICE_NAME,
    HEALTH_SERVICE_NAME,
    SERVICE_NAME,
    ConfigError,
    GatewayConfig,
    ServerSettings,
    load_config,
    with_sections,
)
from ai_service.doors.routes import HttpApp
from ai_service.entry.authentication import Authentication
from ai_service.health.models import ModelHealth
from ai_service.health.servicer import DrainingHealthServicer
from ai_service.identity.authenticator import Identities
from ai_service.identity.throttle import FailedAuthThrottle, failed_auth_rule
from ai_service.interceptors import AuthInterceptor, RateLimitInterceptor
from ai_service.interceptors.arrival import Arrivals, RequestArrival
from ai_service.limits.backends import build_ledger, build_limiter
from ai_service.limits.buckets import RateLimiter
from ai_service.limits.ledger import Ledger
from ai_service.limits.shared_state import SharedRedis
from ai_service.limits.token_quota import TokenQuota
from ai_service.observability.sinks import Observability
from ai_service.pipeline.admin import AdminService
from ai_service.pipeline.answers import Answers
from ai_service.pipeline.cache import MemoryCache, RedisCache, ResponseCache
from ai_service.pipeline.core import ServiceCore
from ai_service.pipeline.dispatch import Dispatcher
from ai_service.pipeline.metering import Meter
from ai_service.pipeline.service import AIService
from ai_service.pipeline.state import ServiceState
from ai_service.pipeline.usage import UsageReports
from ai_service.providers import MediaFetcher, Provider, create_provider
from ai_service.routing.router import Router
from ai_service.runtime.tls import ServerCertificates
from ai_service_protos import ai_service_pb2_grpc

if TYPE_CHECKING:
    from ai_service.doors.server import HttpDoor

log = logging.getLogger(__name__)

#: How long calls cut by a stop may take to unwind (settle their tokens, be recorded).
CALLS_UNWIND_SECONDS = 5.0
#: How long before the end of a drain's grace the streams still running are ended by
#: the gateway (at most a quarter of the grace): time for their statuses to go out.
STREAMS_END_BEFORE_GRACE = 1.0


class Gateway:
    """One gateway server: `await start()`, then `await stop()` (or `async with`)."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        reuse_port: bool = False,
        span_exporter: SpanExporter | None = None,
        load: Callable[[str], GatewayConfig] = load_config,
    ) -> None:
        """`load` reads the config file on a reload (with what the command line set)."""
        self.config = config
        self._load = load
        self.observability = Observability(config.observability, span_exporter)
        self._reuse_port = reuse_port
        self.health = DrainingHealthServicer(config.server.max_health_watches)
        self.model_health = ModelHealth(self.health)
        self.runtime: Runtime | None = None
        self._cache: ResponseCache | None = None
        self._auth_throttle = FailedAuthThrottle(failed_auth_rule(config.auth))
        #: Fetches URL parts for providers that take only bytes; one for every provider.
        self.media = MediaFetcher(config.media_fetch)
        #: Closes of providers a reload retired, each with its providers, until done.
        self._closing: dict[asyncio.Task[None], list[Provider]] = {}
        self._server: grpc.aio.Server | None = None
        #: The HTTP door (OpenAI- and Anthropic-compatible APIs), when configured.
        self.http_door: HttpDoor | None = None
        #: The listener's TLS files, which a reload reads again (None: plaintext).
        self._certificates: ServerCertificates | None = None
        shared = config.shared_state
        self.shared_redis = SharedRedis(shared) if shared.backend == "redis" else None
        self.limiter: RateLimiter = build_limiter(shared, self.shared_redis)
        #: Spend and budgets, where the limits are (a restart-only setting, as they are).
        self.ledger: Ledger = build_ledger(config.cost, self.shared_redis)
        #: Who may call: config keys, tokens, certificates and issued keys.
        self.identities = Identities(self.shared_redis)
        #: Who is calling, for both doors; a reload replaces its identities.
        self.authentication = Authentication(*self.identities.access(config), self._auth_throttle)
        self._auth = AuthInterceptor(self.authentication)
        self.port = 0
        #: Calls waiting for their request message, and the bounds on them.
        self.arrivals = Arrivals(
            config.server.request_message_timeout_seconds,
            config.server.max_calls_awaiting_request,
        )

    @property
    def address(self) -> str:
        host = self.config.server.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def http_address(self) -> str | None:
        """HOST:PORT of the HTTP door; None without one."""
        host = self.config.server.http.host
        if host is None or self.http_door is None:
            return None
        port = self.http_door.port
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _response_cache(self, config: GatewayConfig) -> ResponseCache | None:
        if not config.cache.enabled:
            return None
        if self.shared_redis is not None:
            return RedisCache(self.shared_redis)
        return MemoryCache(config.cache.max_entries)

    def _interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [
            RequestArrival(self.arrivals),
            *self.observability.interceptors(self.arrivals),
            self._auth,
            RateLimitInterceptor(self.limiter),
        ]

    def _build_runtime(self, config: GatewayConfig) -> Runtime:
        """Providers, routes and the call pipeline for `config`; unchanged providers are kept."""
        previous = self.runtime.providers if self.runtime is not None else {}
        kept_settings = {p.name: p for p in self.config.providers} if self.runtime else {}
        self.media.configure(config.media_fetch)
        providers = {
            p.name: previous[p.name]
            if p.name in previous and kept_settings.get(p.name) == p
            else create_provider(p, self.media)
            for p in config.providers
        }
        resilience = config.resilience
        router = Router(
            config.models,
            providers,
            resilience,
            on_circuit_change=self.model_health.circuit_changed,
            previous=self.runtime.router if self.runtime is not None else None,
            upstreams={p.name: p.model_dump_json() for p in config.providers},
        )
        dispatcher = Dispatcher(router, resilience.retries)
        if self._cache is None or config.cache != self.config.cache:
            self._cache = self._response_cache(config)
        meter = Meter(TokenQuota(self.limiter), self.ledger, config)
        answers = Answers(dispatcher, meter, self._cache, config.cache)
        usage = UsageReports(config, meter, self.ledger, lambda: self.identities.virtual)
        return Runtime(config, providers, router, dispatcher, answers, usage)

    @property
    def router(self) -> Router:
        assert self.runtime is not None
        return self.runtime.router

    @property
    def dispatcher(self) -> Dispatcher:
        assert self.runtime is not None
        return self.runtime.dispatcher

    @property
    def answers(self) -> Answers:
        assert self.runtime is not None
        return self.runtime.answers

    async def start(self) -> None:
        settings = self.config.server
        runtime = self.runtime = self._build_runtime(self.config)
        router = runtime.router
        #: The service both doors call: admission, answers, streams.
        self.core = ServiceCore(
            ServiceState.build(self.config, router, runtime.answers, runtime.usage)
        )
        server = grpc.aio.server(
            interceptors=self._interceptors(),
            options=[
                # One process owns its port: a clash must fail, not start a silent twin;
                # only `--workers` shares it, deliberately.
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
                ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
                ("grpc.max_send_message_length", settings.max_send_message_bytes),
                *connection_options(settings),
            ],
        )
        ai_service_pb2_grpc.add_AIServiceServicer_to_server(
            AIService(self.core, settings.max_send_message_bytes), server
        )
        admin = AdminService(lambda: self.identities.virtual, lambda: self.config)
        ai_service_pb2_grpc.add_AdminServicer_to_server(admin, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, ADMIN_SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        try:
            if settings.tls is None:
                self.port = server.add_insecure_port(settings.listen)
            else:
                self._certificates = ServerCertificates(settings.tls)
                credentials = self._certificates.credentials()
                self.port = server.add_secure_port(settings.listen, credentials)
        except RuntimeError as exc:
            await self._close_providers()
            raise OSError(f"cannot listen on {settings.listen}: {exc}") from None
        await server.start()
        self._server = server
        if settings.http.listen is not None:
            await self._open_http_door(settings)
        self.identities.start()
        self.ledger.start()
        await self.observability.start(router, self.config.providers, self.shared_redis)
        serving = health_pb2.HealthCheckResponse.SERVING
        await self.health.set("", serving)
        await self.health.set(SERVICE_NAME, serving)
        await self.health.set(ADMIN_SERVICE_NAME, serving)
        await self.model_health.attach(router)
        listening = {"address": self.address}
        if self.http_address is not None:
            listening["http_address"] = self.http_address
        log.info("gateway listening", extra=listening)

    async def _open_http_door(self, settings: ServerSettings) -> None:
        """The second door: the same calls, authentication, limiter and service core."""
        # Its HTTP server is imported only where a door is configured.
        from ai_service.doors.server import HttpDoor

        app = HttpApp(
            settings.http, self.observability.calls, self.authentication, self.limiter, self.core
        )
        door = HttpDoor(settings.http, app, reuse_port=self._reuse_port)
        try:
            await door.start()
        except OSError:
            await self._server_stop_now()
            raise
        self.http_door = door

    async def _server_stop_now(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None
        await self._close_providers()

    async def stop(self, grace: float | None = None) -> None:
        """Drain: health NOT_SERVING, refuse new calls, let in-flight ones finish within grace."""
        if self._server is None:
            return
        grace = self.config.server.shutdown_grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        log.info("draining", extra={"grace_seconds": grace})
        # gRPC cancels what is left when the grace runs out: those calls are recorded
        # as cut by the shutdown (what their callers see), not as cancelled by them.
        loop = asyncio.get_running_loop()
        cut = loop.call_later(grace, self.observability.grace_ended)
        # Streams are ended a little before, by the gateway, with the stream contract's
        # status (DRAINING, or STREAM_INTERRUPTED with the chunks delivered).
        end_streams = (
            loop.call_later(grace - min(STREAMS_END_BEFORE_GRACE, grace / 4), self.core.end_streams)
            if grace > 0
            else None
        )
        http_door, self.http_door = self.http_door, None
        try:
            # gRPC's stop waits for every call it cut to be released by its handler: one
            # that never lets go must not keep the process from closing what it holds.
            async with asyncio.timeout(grace + CALLS_UNWIND_SECONDS):
                await asyncio.gather(
                    self._server.stop(grace),
                    *([http_door.stop(grace)] if http_door is not None else []),
                )
        except TimeoutError:
            log.error("the servers did not stop within the grace; closing anyway")
        finally:
            cut.cancel()
            if end_streams is not None:
                end_streams.cancel()
        self._server = None
        # gRPC's stop returns before the calls it cut have unwound: their settlements
        # (maybe with Redis) and records come first, then what they use is closed.
        try:
            async with asyncio.timeout(CALLS_UNWIND_SECONDS):
                await self.observability.calls_ended()
                if self.runtime is not None:
                    await self.runtime.answers.unwound()
        except TimeoutError:
            log.warning("calls still unwinding after the grace; closing anyway")
        await self.model_health.close()
        await self._close_providers()
        await self.observability.close()
        log.info("stopped")

    async def _close_providers(self) -> None:
        # Retired providers not closed yet are closed here, now.
        providers = [provider for retired in self._closing.values() for provider in retired]
        for task in self._closing:
            task.cancel()
        self._closing.clear()
        if self.runtime is not None:
            providers += self.runtime.providers.values()
        await asyncio.gather(*(p.aclose() for p in providers), self.media.aclose())
        await self.limiter.aclose()  # gives back what it holds of shared buckets
        await self.ledger.aclose()  # writes out the spend history not yet written
        await self.identities.aclose()
        if self.shared_redis is not None:
            await self.shared_redis.aclose()

    async def reload(self, path: str) -> bool:
        """Re-read the config file and swap it in without dropping a call; False if rejected.

        Keys, limits, routes, models, providers, resilience, cache and redaction change at
        once for new calls; calls in flight finish on what they started with. The TLS
        certificate, key and client CA are read again for new connections (open ones keep
        theirs). The rest of the listener (TLS turned on or off included), shared state
        and observability need a restart: changes there are logged, not applied.
        """
        try:
            loaded = await asyncio.to_thread(self._load, path)
            running = {name: getattr(self.config, name) for name in RESTART_ONLY_SECTIONS}
            # The listener's certificate, key and client CA are read again (rotated
            # files keep their paths), unless TLS itself is turned on or off.
            certificates = self._certificates
            new_tls = loaded.server.tls
            rotating = certificates is not None and certificates.can_rotate_to(new_tls)
            if rotating:
                running["server"] = self.config.server.model_copy(update={"tls": new_tls})
            restart_only = {
                name: value for name, value in running.items() if getattr(loaded, name) != value
            }
            # The running sections must agree with the new rest (the demo key and the
            # listening address, for one), so the whole is checked again.
            config = with_sections(loaded, restart_only)
            if rotating:
                assert certificates is not None and new_tls is not None
                await asyncio.to_thread(certificates.rotate, new_tls)
        except ConfigError as exc:
            log.error("config reload rejected; the running config stays", extra={"error": str(exc)})
            return False
        if restart_only:
            log.warning(
                "config reload: these sections need a restart and keep their running values",
                extra={"sections": sorted(restart_only)},
            )
        old = self.runtime
        runtime = self._build_runtime(config)
        self.authentication.replace(*self.identities.access(config))
        self._auth_throttle.rule = failed_auth_rule(config.auth)
        self.core.state = ServiceState.build(config, runtime.router, runtime.answers, runtime.usage)
        self.runtime, self.config = runtime, config
        self.observability.follow(runtime.router, config.providers)
        await self.model_health.attach(runtime.router)
        if old is not None:
            retired = [
                p for name, p in old.providers.items() if runtime.providers.get(name) is not p
            ]
            self._close_later(retired, config.server.shutdown_grace_seconds)
        reloaded: dict[str, object] = {"models": len(config.models), "keys": len(config.auth.keys)}
        if rotating:
            reloaded["tls_files"] = "read again: new connections use them"
        log.info("config reloaded", extra=reloaded)
        return True

    def _close_later(self, providers: list[Provider], after: float) -> None:
        """Retired providers close once calls that started on them have had time to end."""

        async def close() -> None:
            await asyncio.sleep(after)
            await asyncio.gather(*(p.aclose() for p in providers))

        if providers:
            # Forgotten only once done: a stop that cuts the close short closes them itself.
            task = asyncio.ensure_future(close())
            self._closing[task] = providers
            task.add_done_callback(lambda done: self._closing.pop(done, None))

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop(0)


def connection_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """Keepalive, connection-age and backlog options for life behind a load balancer, and
    the bounds on what connections may hold (see docs/security.md)."""
    handshake_ms = int(settings.handshake_timeout_seconds * 1000)
    options = [
        # Streams past it are refused (REFUSED_STREAM, or ENHANCE_YOUR_CALM before the
        # client has acknowledged the SETTINGS that carry it) ...
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        # ... and only those: gRPC's "overload protection" also refuses streams while
        # ended ones are still being freed, which fails a client that keeps to the limit
        # (measured: 46 of 100 calls UNAVAILABLE at a limit of 10).
        ("grpc.http.overload_protection", 0),
        # A client that never acknowledges the SETTINGS is closed after this long.
        ("grpc.http2.settings_timeout", handshake_ms),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.server_handshake_timeout_ms", handshake_ms),
        # gRPC core's own early rejection of a backlog (random from the first, certain
        # from the second): the defaults are 1000 and 3000.
        ("grpc.server.max_pending_requests", settings.max_pending_calls),
        ("grpc.server.max_pending_requests_hard_limit", 3 * settings.max_pending_calls),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
        # Clients that ping a little too eagerly are not punished with GOAWAY.
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if settings.max_connection_idle_seconds > 0:
        idle_ms = int(settings.max_connection_idle_seconds * 1000)
        options.append(("grpc.max_connection_idle_ms", idle_ms))
    if settings.max_connection_age_seconds > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
            (
                "grpc.max_connection_age_grace_ms",
                int(settings.max_connection_age_grace_seconds * 1000),
            ),
        ]
    return options


@dataclass(frozen=True, slots=True)
class Runtime:
    """What one configuration builds: the providers, their routes and the call pipeline."""

    config: GatewayConfig
    providers: dict[str, Provider]
    router: Router
    dispatcher: Dispatcher
    answers: Answers
    usage: UsageReports


#: Config sections a reload cannot change in a running process.
RESTART_ONLY_SECTIONS = ("server", "shared_state", "observability")
