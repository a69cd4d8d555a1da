"""Health per public model, on the standard grpc.health.v1.Health service.

A model is SERVING while a call to it would find a deployment, its own or a
fallback's, whose circuit admits a call (`Router.can_serve`, the dispatcher's own
test), and SERVICE_UNKNOWN once a reload has removed it.
Circuit transitions, and half-open probes taken or given back, call
`circuit_changed`; an opened circuit also schedules a
check at the end of its cool-down, when it turns half-open without any event, so
`Watch` clients see the model come back.
"""

from __future__ import annotations

import asyncio
import contextlib

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from ai_service.health.servicer import NOT_SERVING, SERVING
from ai_service.resilience import CircuitBreaker, CircuitState
from ai_service.routing.router import Router

SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class ModelHealth:
    def __init__(self, health: HealthServicer) -> None:
        self._health = health
        self._router: Router | None = None
        self._published: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()

    async def attach(self, router: Router) -> None:
        self._router = router
        await self.refresh()

    def circuit_changed(self, breaker: CircuitBreaker) -> None:
        self._schedule_refresh()
        if breaker.state is CircuitState.OPEN:
            loop = asyncio.get_running_loop()
            # A little after the cool-down, when the circuit reads as half-open: the
            # breaker's own, which a reload may have changed.
            cool_down = breaker.settings.open_seconds + 0.01
            now = loop.time()
            self._timers = {t for t in self._timers if t.when() > now}  # only pending ones
            self._timers.add(loop.call_later(cool_down, self._schedule_refresh))

    def _schedule_refresh(self) -> None:
        task = asyncio.ensure_future(self.refresh())
        self._tasks.add(task)  # keep a reference until done
        task.add_done_callback(self._tasks.discard)

    async def refresh(self) -> None:
        if self._router is None:
            return
        router = self._router
        routes = router.routes
        for route in routes:
            status = SERVING if router.can_serve(route) else NOT_SERVING
            if self._published.get(route.name) != status:
                self._published[route.name] = status
                await self._health.set(route.name, status)
        # A model a reload removed is no longer served: its last status must not linger.
        for name in self._published.keys() - {route.name for route in routes}:
            del self._published[name]
            await self._health.set(name, SERVICE_UNKNOWN)

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
