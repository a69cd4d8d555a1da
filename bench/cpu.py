"""CPU µs per call of the server process: the benchmark's steady measure.

On a shared 2-core machine requests per second swing up to 2x between runs, because the
load generator and the simulator compete with the server for the cores. The CPU time the
server process itself spends (utime + stime from /proc/PID/stat) over a fixed number of
calls holds to about ±5 %. So every server here — the bare grpc.aio echo server, the bare
forwarder (grpc.aio + the adapter + the HTTP client, no pipeline), the gateway with the
production config, the gateway with everything optional off, and that base with each
feature on — runs at once; each gets a warm-up, then `--rounds` rounds in which every
server in turn takes `--calls` unary calls from h2load; the table gives each server's
median CPU µs per call and the spread of its rounds, with its RPS beside.

    python -m bench.cpu [--calls 4000] [--rounds 5]

Writes the `## CPU per call` section of bench/RESULTS.md (a full `make bench` runs it
first) and prints the targets as PASS/FAIL lines.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import h2load, procs, report, stack
from bench.h2load import Load, LoadResult

BENCH_DIR = Path(__file__).resolve().parent
HEADING = report.CPU_HEADING
#: h2load's shape: enough calls in flight to keep the server busy, not a queue.
CLIENTS, STREAMS = 4, 8
WARMUP_CALLS = 2_000

ECHO, FORWARDER = "bare grpc.aio echo", "bare forwarder"
PRODUCTION, BASE = "gateway, production config", "gateway, everything optional off"
#: The production config's gateway, its calls through the HTTP door (h2load --h1, as
#: many requests in flight as the gRPC rows: one per connection).
HTTP_DOOR = "HTTP door, production config"


@dataclass(frozen=True)
class Server:
    """How to start one measured server, whether its calls carry the bench key, and
    whether they go to its HTTP door (OpenAI's chat completions) rather than gRPC."""

    start: Callable[[Path, stack.Endpoint], contextlib.AbstractContextManager[stack.Endpoint]]
    auth: bool = False
    http: bool = False


def _gateway(
    name: str, *, http: bool = False, log_level: str = "warning", **switches: Any
) -> Server:
    def start(workdir: Path, sim: stack.Endpoint) -> contextlib.AbstractContextManager[Any]:
        tree = stack.gateway_tree(sim.http, http_door=http, **switches)
        return stack.gateway(workdir, tree, name=f"cpu-{name}", log_level=log_level)

    return Server(start, auth=bool(switches.get("auth")), http=http)


#: The production config: what a deployment turns on — a key and its request limit
#: (the default 600 per minute, raised here so the load is never refused), metrics (on
#: by default), the default log level (info: the access log's line per call) — and every
#: default the gateway applies unasked. The other rows log warnings only.
PRODUCTION_SWITCHES: dict[str, Any] = {
    "auth": True,
    "rate_limit": True,
    "metrics": True,
    "log_level": "info",
}
SERVERS: dict[str, Server] = {
    ECHO: Server(lambda workdir, sim: stack.echo_server(workdir)),
    FORWARDER: Server(lambda workdir, sim: stack.forwarder(workdir, sim)),
    PRODUCTION: _gateway("production", **PRODUCTION_SWITCHES),
    HTTP_DOOR: _gateway("http-door", http=True, **PRODUCTION_SWITCHES),
    BASE: _gateway("base", auth=False, rate_limit=False),
    "+ auth": _gateway("auth", auth=True, rate_limit=False),
    "+ limiter": _gateway("limiter", auth=False, rate_limit=True),
    "+ metrics": _gateway("metrics", auth=False, rate_limit=False, metrics=True),
    "+ access log (log level info)": _gateway(
        "access-log", auth=False, rate_limit=False, log_level="info"
    ),
    "+ tracing (0% sampled)": _gateway("tracing", auth=False, rate_limit=False, tracing="gateway"),
    "+ redaction (redact, built-in detectors)": _gateway(
        "redaction", auth=False, rate_limit=False, redaction=True
    ),
    "+ cache (request not cacheable)": _gateway("cache", auth=False, rate_limit=False, cache=True),
}
#: Features measured against BASE (the audit log writes a file: it gets its own path).
FEATURE_PREFIX = "+ "


@dataclass
class Rounds:
    cpu_us: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.cpu_us) if self.cpu_us else float("nan")

    @property
    def spread(self) -> str:
        if not self.cpu_us:
            return "—"
        return f"{min(self.cpu_us):.0f}-{max(self.cpu_us):.0f}"


def _load(endpoint: stack.Endpoint, workdir: Path, calls: int, server: Server) -> Load:
    if server.http:
        return stack.http_door_load(
            endpoint, workdir, concurrency=CLIENTS * STREAMS, calls=calls, auth=server.auth
        )
    auth = server.auth
    template = stack.grpc_unary_load(
        endpoint, workdir, clients=CLIENTS, streams=STREAMS, duration=1, warmup=0, auth=auth
    )
    return Load(
        url=template.url,
        body=template.body,
        headers=template.headers,
        clients=CLIENTS,
        streams_per_client=STREAMS,
        duration=0,
        warmup=0,
        calls=calls,
    )


@dataclass(frozen=True)
class Sample:
    cpu_us: float
    load: LoadResult


def measure(
    label: str, endpoint: stack.Endpoint, workdir: Path, calls: int, server: Server
) -> Sample | None:
    """One round: the server's CPU over `calls` calls, or None if they did not all succeed."""
    before = procs.cpu_seconds(endpoint.pid)
    result = h2load.run(label, _load(endpoint, workdir, calls, server), workdir)
    spent = procs.cpu_seconds(endpoint.pid) - before
    if not result.ok or result.succeeded != calls:
        print(f"  {label}: {result.succeeded}/{calls} calls {result.error}", flush=True)
        return None
    return Sample(spent / calls * 1e6, result)


def run(workdir: Path, calls: int, rounds: int, only: list[str] | None = None) -> dict[str, Rounds]:
    """Every server started at once, warmed up, then measured in turn, `rounds` times."""
    chosen = {name: SERVERS[name] for name in (only or SERVERS)}
    results = {name: Rounds() for name in chosen}
    with contextlib.ExitStack() as started, stack.simulator(workdir) as sim:
        endpoints = {
            name: started.enter_context(s.start(workdir, sim)) for name, s in chosen.items()
        }
        for name, endpoint in endpoints.items():
            measure(f"warm {name}", endpoint, workdir, WARMUP_CALLS, chosen[name])
        for round_number in range(rounds):
            for name, endpoint in endpoints.items():
                sample = measure(name, endpoint, workdir, calls, chosen[name])
                if sample is None:
                    continue
                into = results[name]
                into.cpu_us.append(sample.cpu_us)
                into.rps.append(sample.load.rps)
                into.p50_ms.append(sample.load.latency.p50_ms)
            line = "  ".join(f"{n[:14]} {r.cpu_us[-1]:.0f}" for n, r in results.items() if r.cpu_us)
            print(f"round {round_number + 1}: {line}", flush=True)
    return results


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    unit: str

    @property
    def passed(self) -> bool:
        return self.value <= self.limit

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        target = f"target ≤ {self.limit:g}{self.unit}"
        return f"{verdict}  {self.name}: {self.value:.2f}{self.unit} ({target})"


def checks(results: dict[str, Rounds]) -> list[Check]:
    found: list[Check] = []
    median = {name: r.median for name, r in results.items() if r.cpu_us}
    if PRODUCTION in median and ECHO in median:
        found.append(
            Check("production config / bare echo", median[PRODUCTION] / median[ECHO], 1.5, "x")
        )
    if PRODUCTION in median and FORWARDER in median:
        found.append(
            Check(
                "production config / bare forwarder",
                median[PRODUCTION] / median[FORWARDER],
                1.2,
                "x",
            )
        )
    if HTTP_DOOR in median and PRODUCTION in median:
        ratio = median[HTTP_DOOR] / median[PRODUCTION]
        found.append(Check("HTTP door / gRPC door (production config)", ratio, 1.3, "x"))
    if BASE in median:
        for name, value in median.items():
            if name.startswith(FEATURE_PREFIX):
                found.append(Check(f"{name[2:]} costs", value - median[BASE], 10.0, " µs"))
    return found


def section(results: dict[str, Rounds], calls: int, rounds: int) -> list[str]:
    from bench.__main__ import written_by

    echo = results.get(ECHO)
    forwarder = results.get(FORWARDER)
    base = results.get(BASE)
    lines = [
        HEADING,
        "",
        f"{written_by('bench.cpu')}. Each server takes {calls:,} unary calls per round from "
        f"h2load ({CLIENTS} connections x {STREAMS} streams) after {WARMUP_CALLS:,} to warm up; "
        f"{rounds} rounds, servers interleaved. CPU is the server process's utime + stime "
        "from /proc; the median and the spread (min-max) of the rounds.",
        "",
        "| server | CPU µs per call | spread | x echo | x forwarder | vs base | RPS (median) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if not r.cpu_us:
            lines.append(f"| {name} | failed | | | | | |")
            continue

        delta = (
            f"{r.median - base.median:+.0f}"
            if base and base.cpu_us and name.startswith(FEATURE_PREFIX)
            else ""
        )
        lines.append(
            f"| {name} | {r.median:.0f} | {r.spread} | {_ratio(r, echo)} | "
            f"{_ratio(r, forwarder)} | {delta} | {statistics.median(r.rps):,.0f} |"
        )
    lines += ["", *(f"- {check.line()}" for check in checks(results))]
    return lines


def _ratio(of: Rounds, to: Rounds | None) -> str:
    return f"{of.median / to.median:.2f}" if to and to.cpu_us else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cpu", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=4_000, help="calls per server per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", action="append", choices=list(SERVERS), help="(repeatable)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    if not h2load.available():
        print("bench.cpu: h2load not found; install it: apt-get install -y nghttp2-client")
        return 2
    procs.install_teardown()
    workdir = BENCH_DIR / ".work"
    workdir.mkdir(exist_ok=True)
    try:
        results = run(workdir, args.calls, args.rounds, args.only)
    finally:
        procs.stop_all()
    report.replace_section(args.output, HEADING, section(results, args.calls, args.rounds))
    for check in checks(results):
        print(check.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
