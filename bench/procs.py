"""Child processes that cannot outlive the benchmark.

Every child starts in its own session (so a signal reaches its whole tree), is recorded
in a registry, and is stopped (SIGTERM, then SIGKILL after a grace) by the context
manager that started it, by an `atexit` hook, and on SIGTERM/SIGINT of the benchmark.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LOOPBACK = "127.0.0.1"

_children: dict[int, subprocess.Popen[Any]] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port (or the child died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout:.0f}s")


def listeners(port: int) -> int:
    """Sockets listening on this TCP port (several when processes share it: SO_REUSEPORT).

    gRPC binds 127.0.0.1 as a v4-mapped IPv6 socket: it shows in /proc/net/tcp6.
    """
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            if local.endswith(f":{port:04X}") and state == "0A":
                count += 1
    return count


def wait_listeners(port: int, count: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until `count` sockets listen on the port: every worker is serving, not just one."""
    deadline = time.monotonic() + timeout
    while listeners(port) < count:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{listeners(port)} of {count} workers listen after {timeout:.0f}s")
        time.sleep(0.05)


def raise_fd_limit() -> None:
    """Soft open-files limit up to the hard one, inherited by every child started after.

    10,000 streams need 10,000 upstream sockets in the gateway and in the simulator.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spawn(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session, registered for teardown."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (closed by the child)
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    _children[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after `grace` seconds."""
    _children.pop(proc.pid, None)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    else:
        # The leader is gone; make sure nothing of its group survived it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    port: int | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """A child for the duration of a `with` block; waits for `port` if given."""
    proc = spawn(argv, log=log, env=env)
    try:
        if port is not None:
            wait_port(port, proc, ready_timeout)
        yield proc
    finally:
        stop(proc)


def run_bounded(
    argv: Sequence[str], timeout: float, *, log: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a child to completion (output captured), killing its group after `timeout`."""
    proc = subprocess.Popen(
        list(argv),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _children[proc.pid] = proc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n[bench] killed after {timeout:.0f}s"
    finally:
        _children.pop(proc.pid, None)
    if log:
        log.write_text(f"$ {' '.join(argv)}\n{out}\n--- stderr\n{err}", encoding="utf-8")
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def spawn_piped(argv: Sequence[str], *, log: Path) -> subprocess.Popen[str]:
    """A child with text pipes on stdin/stdout (stderr to `log`), registered for teardown."""
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            list(argv),
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of the child's stdout, or "" (and the child stopped) after `timeout`."""
    assert proc.stdout is not None
    pool = ThreadPoolExecutor(1)
    future = pool.submit(proc.stdout.readline)
    try:
        return future.result(timeout)
    except TimeoutError:
        stop(proc)
        return ""
    finally:
        pool.shutdown(wait=False)


def rss_bytes(pid: int) -> int:
    """Resident set size of one process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def alive(pid: int) -> bool:
    """Whether the process still runs (an exited child waiting to be reaped does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far, from /proc (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The direct children of a process (e.g. a supervisor's workers), from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def stop_all() -> None:
    for proc in list(_children.values()):
        stop(proc, grace=2.0)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    stop_all()
    raise SystemExit(128 + signum)


def install_teardown() -> None:
    """Stop every registered child at exit and on SIGTERM/SIGINT."""
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
