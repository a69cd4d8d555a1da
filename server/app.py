"""Builds the gateway's grpc.aio server and runs it until a signal drains it.

The interceptor list below is the order a call passes through: tracing (when on)
and telemetry (request id, call record), authentication, then rate limiting,
then the servicer. Health (the server, AIService and each
public model) and reflection are served beside AIService and stay open to everyone.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace.export import SpanExporter

from protos import ai_service_pb2, ai_service_pb2_grpc
from server.cache import MemoryCache, RedisCache, ResponseCache
from server.completions import Completions
from server.config import GatewayConfig
from server.dispatch import Dispatcher
from server.interceptors import AuthInterceptor, Caller, RateLimitInterceptor
from server.interceptors.auth import KeyRing, rate_rule, token_rule
from server.limiter import InMemoryRateLimiter, RateLimiter, RedisRateLimiter
from server.model_health import ModelHealth
from server.observability.telemetry import Observability
from server.providers import Provider, create_provider
from server.quota import TokenQuota
from server.routing import Router
from server.service import AIService
from server.shared_state import SharedRedis
from server.tls import server_credentials

log = logging.getLogger(__name__)

SERVICE_NAME = ai_service_pb2.DESCRIPTOR.services_by_name["AIService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class Gateway:
    """One gateway server: `await start()`, then `await stop()` (or `async with`)."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        reuse_port: bool = False,
        span_exporter: SpanExporter | None = None,
    ) -> None:
        self.config = config
        self.observability = Observability(config.observability, span_exporter)
        self._reuse_port = reuse_port
        self.health = HealthServicer()
        self.model_health = ModelHealth(self.health, config.resilience.circuit_breaker.open_seconds)
        self._providers: dict[str, Provider] = {}
        self._server: grpc.aio.Server | None = None
        shared = config.shared_state
        self.shared_redis = SharedRedis(shared) if shared.backend == "redis" else None
        self.limiter: RateLimiter = (
            RedisRateLimiter(self.shared_redis) if self.shared_redis else InMemoryRateLimiter()
        )
        self.port = 0

    @property
    def address(self) -> str:
        host = self.config.server.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def _response_cache(self) -> ResponseCache | None:
        if not self.config.cache.enabled:
            return None
        if self.shared_redis is not None:
            return RedisCache(self.shared_redis)
        return MemoryCache(self.config.cache.max_entries)

    def _interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        auth = self.config.auth
        keyring = KeyRing(auth, self.config.rate_limit) if auth.enabled else None
        anonymous = Caller(
            "anonymous",
            frozenset(),
            rate_rule(self.config.rate_limit),
            token_rule(self.config.rate_limit),
        )
        return [
            *self.observability.interceptors(),
            AuthInterceptor(keyring, anonymous),
            RateLimitInterceptor(self.limiter),
        ]

    async def start(self) -> None:
        settings = self.config.server
        self._providers = {
            p.name: create_provider(p, self.config.models) for p in self.config.providers
        }
        resilience = self.config.resilience
        router = Router(
            self.config.models,
            self._providers,
            resilience,
            on_circuit_change=self.model_health.circuit_changed,
        )
        self.router = router
        self.dispatcher = Dispatcher(router, resilience.retries)
        self.completions = Completions(
            self.dispatcher, TokenQuota(self.limiter), self._response_cache(), self.config.cache
        )
        server = grpc.aio.server(
            interceptors=self._interceptors(),
            options=[
                # One process owns its port: a clash must fail, not start a silent twin;
                # only `--workers` shares it, deliberately.
                ("grpc.so_reuseport", 1 if self._reuse_port else 0),
                ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
                ("grpc.max_send_message_length", settings.max_send_message_bytes),
            ],
        )
        ai_service_pb2_grpc.add_AIServiceServicer_to_server(
            AIService(self.config, router, self.completions), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        try:
            if settings.tls is None:
                self.port = server.add_insecure_port(settings.listen)
            else:
                credentials = server_credentials(settings.tls)
                self.port = server.add_secure_port(settings.listen, credentials)
        except RuntimeError as exc:
            await self._close_providers()
            raise OSError(f"cannot listen on {settings.listen}: {exc}") from None
        await server.start()
        self._server = server
        await self.observability.start(router.deployments, self.config.providers)
        serving = health_pb2.HealthCheckResponse.SERVING
        await self.health.set("", serving)
        await self.health.set(SERVICE_NAME, serving)
        await self.model_health.attach(router)
        log.info("gateway listening", extra={"address": self.address})

    async def stop(self, grace: float | None = None) -> None:
        """Drain: health NOT_SERVING, refuse new calls, let in-flight ones finish within grace."""
        if self._server is None:
            return
        grace = self.config.server.shutdown_grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        log.info("draining", extra={"grace_seconds": grace})
        await self._server.stop(grace)
        self._server = None
        await self.model_health.close()
        await self._close_providers()
        await self.observability.close()
        log.info("stopped")

    async def _close_providers(self) -> None:
        await asyncio.gather(*(p.aclose() for p in self._providers.values()))
        self._providers = {}
        if self.shared_redis is not None:
            await self.shared_redis.aclose()

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


async def serve_until_signalled(gateway: Gateway) -> None:
    """Run until SIGTERM or SIGINT, then drain and return."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    await gateway.stop()
