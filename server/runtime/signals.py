"""Signals: SIGTERM and SIGINT drain the gateway, SIGHUP reloads its config file."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from ai_service.runtime.gateway import Gateway
from ai_service.runtime.heap import freeze_long_lived, refreeze

log = logging.getLogger(__name__)

#: What drains the gateway. A supervisor starts its workers with these blocked (see
#: `server.supervisor`), so one sent while a worker is still starting is kept, not fatal.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Every signal the gateway handles; each may come before its handler is in place.
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP)


async def serve_until_signalled(
    gateway: Gateway,
    config_path: str | None = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Start `gateway` and run until SIGTERM or SIGINT, then drain and return; SIGHUP
    reloads `config_path`.

    The handlers are in place before the gateway starts: a SIGHUP during start-up (a
    supervisor passing one on to a worker it just started) waits for the start instead
    of killing the process, and a SIGTERM stops it as soon as it has started. They stay
    in place while it drains, and the process ignores all three once drained: a stop
    signal sent again (a supervisor passing on the SIGTERM its whole process group got
    already) cuts no call short and does not turn a clean exit into a killed one.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()
    started = False
    reload_waiting = False

    def reload() -> None:
        nonlocal reload_waiting
        if config_path is None:
            log.warning("SIGHUP ignored: the embedded default has no config file to reload")
            return
        if not started:
            reload_waiting = True
            return
        task = asyncio.ensure_future(gateway.reload(config_path))
        reloads.add(task)
        task.add_done_callback(reloads.discard)
        task.add_done_callback(lambda _: refreeze())

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    # A stop or a reload that came while the process was starting is handled now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
    try:
        await gateway.start()
        started = True
        if on_started is not None:
            on_started()
        if reload_waiting:
            reload()
        freeze_long_lived()  # the process is built: from here on, calls make the garbage
        await stop.wait()
        # Draining: SIGTERM or SIGINT again only sets `stop` again, and SIGHUP is moot.
        loop.add_signal_handler(signal.SIGHUP, _reload_while_draining)
        await gateway.stop()
    finally:
        _ignore_signals(loop, HANDLED_SIGNALS)


def _reload_while_draining() -> None:
    log.info("SIGHUP ignored: draining")


def _ignore_signals(loop: asyncio.AbstractEventLoop, signums: tuple[int, ...]) -> None:
    """The process only exits from here on; their default action would kill it on the way."""
    for signum in signums:
        loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_IGN)
