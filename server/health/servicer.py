"""grpc.health.v1 for a gateway that drains: Watch streams end with the drain.

grpc's asyncio health servicer keeps every Watch open until its caller leaves, so a
client that watches health (gRPC client-side health checking does) held every drain
for its whole grace period, and the stream was then cut. Here a Watch ends, with OK,
once it has told its caller NOT_SERVING during a drain.

Health is open to every caller, and each Watch holds a stream and a task for as long
as its caller likes: past `max_watches` at once, a new one is refused
RESOURCE_EXHAUSTED (Check still answers).
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from ai_service.errors import TooManyStreams, abort

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Told(Exception):
    """The watcher has been told NOT_SERVING during a drain: its stream may end."""


class _Watch:
    """A Watch call's context, noting what it last told the caller."""

    def __init__(self, service: str, context: Any, health: DrainingHealthServicer) -> None:
        self.service = service
        self._context = context
        self._health = health
        self.last: int | None = None
        self.ended_by_drain = False

    async def write(self, message: health_pb2.HealthCheckResponse) -> None:
        await self._context.write(message)
        self.last = message.status
        # While draining no status changes any more (grpc's servicer ignores `set`):
        # whatever is told now is final.
        if self._health.draining and message.status != SERVING:
            raise _Told

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class DrainingHealthServicer(HealthServicer):  # type: ignore[misc]  # untyped upstream
    def __init__(self, max_watches: int = 1000) -> None:
        super().__init__()
        self.draining = False
        self.max_watches = max_watches
        self._watches: dict[asyncio.Task[Any], _Watch] = {}

    @property
    def watching(self) -> int:
        """Watch streams open now."""
        return len(self._watches)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        if len(self._watches) >= self.max_watches:
            refusal = TooManyStreams(
                f"{self.max_watches} health Watch streams are open, the server's limit; "
                "poll with Check, or watch later",
                subject="health-watch",
                limit=self.max_watches,
            )
            await abort(context, refusal)
        task = asyncio.current_task()
        assert task is not None
        watch = self._watches[task] = _Watch(request.service, context, self)
        try:
            await super().Watch(request, watch)
        except _Told:
            return
        except asyncio.CancelledError:
            if not watch.ended_by_drain:
                raise
            task.uncancel()  # ended here, not by its caller: it ends OK
        finally:
            del self._watches[task]

    async def enter_graceful_shutdown(self) -> None:
        self.draining = True
        await super().enter_graceful_shutdown()  # each Watch tells NOT_SERVING, then ends
        for task, watch in self._watches.items():
            # Told NOT_SERVING already, or of a service with no status: nothing new is
            # coming to it.
            if watch.last == NOT_SERVING or watch.service not in self._server_status:
                watch.ended_by_drain = True
                task.cancel()
