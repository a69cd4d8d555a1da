"""The HTTP door's listener: uvicorn's HTTP/1.1 protocol (httptools' parser) on the
gateway's own event loop.

Chosen by CPU per call (bench/RESULTS.md, "The HTTP door"): aiohttp's server, already a
dependency of the gateway, spent half as much again per request. Only uvicorn's server
part is used: the socket is the gateway's (SO_REUSEPORT with `--workers`, as the gRPC
port), signals stay the gateway's (`runtime/signals.py`), logging the gateway's (no
access log of uvicorn's: the gateway writes its own line per call), and no lifespan.
A stop closes the listener and idle connections at once, lets calls in flight finish
within the grace, then cuts the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket

import uvicorn

from ai_service.config import HttpDoorSettings, split_host_port
from ai_service.doors.routes import HttpApp

# uvicorn's own lines (its start and stop) say nothing the gateway's do not; its
# warnings (a malformed request) and errors still come through.
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


class HttpDoor:
    """`await start()`, then `await stop(grace)`."""

    def __init__(self, settings: HttpDoorSettings, app: HttpApp, *, reuse_port: bool) -> None:
        assert settings.listen is not None
        self._listen = settings.listen
        self._reuse_port = reuse_port
        self._config = uvicorn.Config(
            app,
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,  # the gateway's logging stays as it is
            server_header=False,
            timeout_keep_alive=int(settings.keepalive_timeout_seconds),
            limit_concurrency=settings.max_connections,
            backlog=settings.backlog,
        )
        self._server: uvicorn.Server | None = None
        self._ticking: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        host, port = split_host_port(self._listen)
        sock = _listening_socket(host, port, self._reuse_port, self._config.backlog)
        self.port = sock.getsockname()[1]
        config = self._config
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server = server
        # Its clock: the Date header, once a second.
        self._ticking = asyncio.ensure_future(server.main_loop())

    async def stop(self, grace: float) -> None:
        server = self._server
        if server is None:
            return
        self._server = None
        server.should_exit = True
        # Calls in flight get the grace; uvicorn cancels what is left after it.
        self._config.timeout_graceful_shutdown = math.ceil(max(grace, 0.0))
        if self._ticking is not None:
            await self._ticking
        with contextlib.suppress(Exception):
            await server.shutdown()


def _listening_socket(host: str, port: int, reuse_port: bool, backlog: int) -> socket.socket:
    """The door's socket, bound: a clash fails here (only `--workers` share a port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} (server.http.listen): {exc}") from None
    return sock
