"""`python -m bench.keyless`: what a client without a key can make one gateway hold.

Starts the simulator and one gateway process with its default bounds and an audit log,
then drives raw HTTP/2 at it (bench/h2raw.py) as a hostile client would, one phase after
another, reading the gateway's RSS and CPU time from /proc and the size of its audit
files before, during (peak RSS, sampled every 20 ms) and after each phase:

1. idle connections, up to `server.max_connections` and past it;
2. HEADERS-only streams (no request ever follows) on many connections, until the gateway
   has ended every one of them;
3. health Watch streams, past `server.max_health_watches`;
4. complete ChatCompletion calls without a key, as fast as the client can send them;
5. rapid reset: streams opened and reset at once.

Prints a Markdown table; docs/security.md ("What a client without a key can cost")
quotes a run of it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from grpc_health.v1 import health_pb2

from bench import procs, stack
from bench.h2raw import RawH2

CHAT = "/ai_service.v1.AIService/ChatCompletion"
CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * PAGE


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def audit_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


class PeakRss:
    """The highest RSS of `pid` while the block runs, sampled from a thread."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self._pid))


@dataclass
class Phase:
    name: str
    held: str = ""
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    cpu: float = 0.0
    audit: int = 0
    #: Calls the client made, when it made any: the costs per call are noted.
    calls: int = 0
    notes: list[str] = field(default_factory=list)


async def measured(
    name: str, pid: int, audit: Path, run: Callable[[Phase], Awaitable[None]]
) -> Phase:
    phase = Phase(name)
    await asyncio.sleep(1.0)  # let what the last phase freed settle
    phase.rss_before = rss_bytes(pid)
    cpu, logged = cpu_seconds(pid), audit_bytes(audit)
    with PeakRss(pid) as peak:
        await run(phase)
        await asyncio.sleep(1.5)  # the audit writer's period, and what is freed late
    phase.rss_peak, phase.rss_after = max(peak.peak, phase.rss_before), rss_bytes(pid)
    phase.cpu, phase.audit = cpu_seconds(pid) - cpu, audit_bytes(audit) - logged
    if phase.calls:
        phase.notes.append(
            f"per call: {phase.cpu / phase.calls * 1e6:.0f} µs of gateway CPU, "
            f"{phase.audit / phase.calls:.2f} audit bytes"
        )
    return phase


async def connect_many(port: int, count: int) -> tuple[list[RawH2], int]:
    """Up to `count` connections that got the server's SETTINGS; and how many were closed
    without them (the listener at its limit)."""
    opened, refused = [], 0
    for _ in range(count):
        raw = await RawH2.connect(procs.LOOPBACK, port)
        if raw.settings_received.is_set() and not raw.closed.is_set():
            opened.append(raw)
        else:
            refused += 1
            await raw.close()
    return opened, refused


async def close_all(connections: list[RawH2]) -> None:
    await asyncio.gather(*(raw.close() for raw in connections))


def idle_connections(port: int, count: int) -> Callable[[Phase], Awaitable[None]]:
    async def run(phase: Phase) -> None:
        connections, refused = await connect_many(port, count)
        await asyncio.sleep(1.0)
        phase.held = f"{len(connections)} connections ({refused} more closed at accept)"
        await close_all(connections)

    return run


def headers_only(port: int, connections: int, streams: int) -> Callable[[Phase], Awaitable[None]]:
    async def run(phase: Phase) -> None:
        opened, _ = await connect_many(port, connections)
        for raw in opened:
            raw.ignore_stream_limit()
        started = time.monotonic()
        ids = [(raw, await raw.open(CHECK)) for _ in range(streams) for raw in opened]
        ends: Counter[str] = Counter()
        for raw, stream in ids:
            state = await raw.wait_ended(stream)
            ends[
                "refused (RST_STREAM)" if state.reset and state.grpc_status is None else "ended"
            ] += 1
        took = time.monotonic() - started
        phase.held = f"{len(ids)} streams sent on {len(opened)} connections"
        phase.notes.append(f"{dict(ends)}; all over after {took:.1f}s")
        await close_all(opened)

    return run


def watches(port: int, count: int, per_connection: int) -> Callable[[Phase], Awaitable[None]]:
    async def run(phase: Phase) -> None:
        opened, _ = await connect_many(port, -(-count // per_connection))
        request = health_pb2.HealthCheckRequest().SerializeToString()
        ids = [
            (raw, await raw.open(WATCH, message=request))
            for raw in opened
            for _ in range(per_connection)
        ]
        await asyncio.sleep(2.0)
        refused = sum(1 for raw, stream in ids if raw.streams[stream].ended.is_set())
        phase.held = f"{len(ids) - refused} Watch streams open ({refused} refused)"
        await close_all(opened)

    return run


def keyless_flood(
    port: int, connections: int, seconds: float
) -> Callable[[Phase], Awaitable[None]]:
    request = stack.chat_request().SerializeToString()

    async def caller(raw: RawH2, until: float, codes: Counter[str]) -> None:
        while time.monotonic() < until and not raw.closed.is_set():
            state = await raw.wait_ended(await raw.open(CHAT, message=request))
            codes[state.grpc_status or "reset"] += 1

    async def run(phase: Phase) -> None:
        opened, _ = await connect_many(port, connections)
        codes: Counter[str] = Counter()
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(*(caller(raw, until, codes) for raw in opened for _ in range(50)))
        took = time.monotonic() - started
        phase.calls = sum(codes.values())
        phase.held = f"{phase.calls} calls in {took:.1f}s ({phase.calls / took:.0f}/s)"
        phase.notes.append(f"grpc-status {dict(codes)}")
        await close_all(opened)

    return run


def rapid_reset(port: int, streams: int) -> Callable[[Phase], Awaitable[None]]:
    async def run(phase: Phase) -> None:
        [raw], _ = await connect_many(port, 1)
        sent = 0
        started = time.monotonic()
        for _ in range(streams):
            if raw.closed.is_set():
                break
            await raw.reset(await raw.open(CHAT))
            sent += 1
        took = time.monotonic() - started
        phase.held = f"{sent} streams opened and reset in {took:.1f}s"
        if raw.closed.is_set():
            phase.notes.append(f"connection closed by the server: {raw.goaway}")
        await raw.close()

    return run


def mib(value: int) -> str:
    return f"{value / 2**20:.0f}"


def table(phases: list[Phase]) -> str:
    lines = [
        "| phase | what the client held | RSS before / peak / after (MiB) | gateway CPU (s) "
        "| audit bytes |",
        "|---|---|---|---|---|",
    ]
    for phase in phases:
        rss = f"{mib(phase.rss_before)} / {mib(phase.rss_peak)} / {mib(phase.rss_after)}"
        lines.append(f"| {phase.name} | {phase.held} | {rss} | {phase.cpu:.1f} | {phase.audit:,} |")
    notes = [f"- {phase.name}: {'; '.join(phase.notes)}" for phase in phases if phase.notes]
    return "\n".join([*lines, "", *notes])


async def run_phases(args: argparse.Namespace, gateway: stack.Endpoint, audit: Path) -> str:
    port, pid = gateway.port, gateway.pid
    return table(
        [
            await measured(
                "idle connections", pid, audit, idle_connections(port, args.connections)
            ),
            await measured(
                "HEADERS-only streams", pid, audit, headers_only(port, args.stream_connections, 100)
            ),
            await measured("health Watch", pid, audit, watches(port, args.watches, 100)),
            await measured("keyless calls", pid, audit, keyless_flood(port, 8, args.seconds)),
            await measured("rapid reset", pid, audit, rapid_reset(port, args.resets)),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1020, help="idle connections tried")
    parser.add_argument(
        "--stream-connections", type=int, default=100, help="connections x 100 HEADERS-only"
    )
    parser.add_argument("--watches", type=int, default=1100, help="Watch streams tried")
    parser.add_argument("--seconds", type=float, default=10.0, help="keyless flood length")
    parser.add_argument("--resets", type=int, default=50_000, help="streams opened and reset")
    args = parser.parse_args()
    procs.raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="bench-keyless-") as folder:
        workdir = Path(folder)
        audit = workdir / "audit" / "audit.jsonl"
        with stack.simulator(workdir) as sim:
            tree = stack.gateway_tree(sim.http, audit=audit)
            with stack.gateway(workdir, tree) as gateway:
                print(asyncio.run(run_phases(args, gateway, audit)))
        # Stopped: its last refusals summary is written.
        records = audit.read_text(encoding="utf-8").splitlines() if audit.exists() else []
        print(
            f"- audit log at the end: {audit_bytes(audit):,} bytes in {len(records)} records "
            f"(every call above was refused before authentication)"
        )


if __name__ == "__main__":
    main()
