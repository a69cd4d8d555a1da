"""`--workers N`: N gateway processes sharing one port, supervised.

Each worker is a fresh interpreter (`python -m ai_service … --workers 1 --reuse-port`),
so no gRPC object ever crosses a fork (gRPC objects do not survive one), and each has
its own event loop and upstream connection pools; the kernel spreads connections over
them with SO_REUSEPORT. The supervisor creates no gRPC object. It restarts a worker that
dies, gives up when one keeps dying at start, passes SIGHUP on (every worker reloads its
config), and on SIGTERM/SIGINT passes the signal on so every worker drains, then exits 0
when they all did. The workers share their in-memory rate limits through a file the
supervisor names (limits/host_buckets.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

from ai_service.limits.host_buckets import HOST_BUCKETS_VARIABLE
from ai_service.runtime.signals import HANDLED_SIGNALS

log = logging.getLogger(__name__)

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

#: Memory, not disk, behind the workers' shared rate-limit file, where the host has it.
_SHARED_MEMORY = "/dev/shm" if os.path.isdir("/dev/shm") else None

#: A worker that dies this soon after starting, this many times in a row, is broken.
EARLY_DEATH_SECONDS = 5.0
MAX_EARLY_DEATHS = 5


@dataclass
class _Worker:
    slot: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    early_deaths: int = 0


class Supervisor:
    def __init__(self, worker_argv: Sequence[str], workers: int, grace_seconds: float) -> None:
        self._argv = [
            sys.executable,
            "-m",
            "ai_service",
            *worker_argv,
            "--workers",
            "1",
            "--reuse-port",
        ]
        self._count = workers
        self._grace = grace_seconds
        self._stopping = False
        self._workers: list[_Worker] = []
        self._env = dict(os.environ)
        self._metrics_dir: str | None = None
        self._buckets_dir = ""

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request_stop)
        signal.signal(signal.SIGHUP, self._forward_reload)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)  # see server/__main__.py
        if not self._env.get(METRICS_DIR_VARIABLE):
            # Workers write their metrics here and whichever serves /metrics sums them all.
            self._metrics_dir = tempfile.mkdtemp(prefix="ai-service-metrics-")
            self._env[METRICS_DIR_VARIABLE] = self._metrics_dir
        # Without Redis, the workers keep their rate limits in one file they all map, so
        # a key's limit holds across them (with Redis they use Redis and ignore it).
        self._buckets_dir = tempfile.mkdtemp(prefix="ai-service-limits-", dir=_SHARED_MEMORY)
        self._env[HOST_BUCKETS_VARIABLE] = os.path.join(self._buckets_dir, "buckets")
        try:
            self._workers = [self._spawn(slot) for slot in range(self._count)]
            log.info("supervisor started", extra={"workers": self._count})
            healthy = True
            while not self._stopping and healthy:
                time.sleep(0.2)
                healthy = self._restart_dead()
            return self._stop_all(clean=healthy)
        finally:
            if self._metrics_dir is not None:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
            shutil.rmtree(self._buckets_dir, ignore_errors=True)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _forward_reload(self, signum: int, frame: FrameType | None) -> None:
        # Every worker re-reads the config itself (and rejects it alike if it is invalid).
        for worker in self._workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGHUP)

    def _spawn(self, slot: int, early_deaths: int = 0) -> _Worker:
        process = subprocess.Popen(self._argv, env=self._env, preexec_fn=_prepare_worker)
        log.info("worker started", extra={"slot": slot, "pid": process.pid})
        return _Worker(slot, process, early_deaths=early_deaths)

    def _restart_dead(self) -> bool:
        for i, worker in enumerate(self._workers):
            code = worker.process.poll()
            if code is None or self._stopping:
                continue
            early = time.monotonic() - worker.started < EARLY_DEATH_SECONDS
            deaths = worker.early_deaths + 1 if early else 0
            log.error(
                "worker died; restarting",
                extra={"slot": worker.slot, "pid": worker.process.pid, "exit_code": code},
            )
            _forget_metrics_of(worker.process.pid, self._env[METRICS_DIR_VARIABLE])
            if deaths >= MAX_EARLY_DEATHS:
                log.error("worker keeps dying at start; giving up", extra={"slot": worker.slot})
                return False
            self._workers[i] = self._spawn(worker.slot, deaths)
        return True

    def _stop_all(self, *, clean: bool) -> int:
        for worker in self._workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace + 10
        codes = []
        for worker in self._workers:
            try:
                codes.append(worker.process.wait(timeout=max(deadline - time.monotonic(), 0.1)))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                codes.append(worker.process.wait())
        log.info("supervisor stopped", extra={"exit_codes": codes})
        return 0 if clean and all(code == 0 for code in codes) else 1


def _forget_metrics_of(pid: int, directory: str) -> None:
    """A dead worker's live gauges (in-flight calls) must not count any more."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _prepare_worker() -> None:
    """In the worker, before exec.

    SIGHUP, SIGTERM and SIGINT are blocked (a blocked signal stays blocked across exec,
    and pending): a reload or a stop sent while the worker is still starting, by the
    supervisor or to the whole process group, must not kill it, yet must not be lost.
    The gateway handles all three once it runs, and unblocks them then
    (`serve_until_signalled`): a pending stop drains it at once, a pending reload
    re-reads the config once it has started.
    Then the worker is SIGTERMed (a graceful drain) if the supervisor dies, even by
    SIGKILL, so no worker is ever left orphaned holding the port.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
