"""CPU µs per call of the server process: the benchmark's steady measure.

On a shared 2-core machine requests per second swing up to 2x between runs, because the
load generator and the simulator compete with the server for the cores. The CPU time the
server process itself spends (utime + stime from /proc/PID/stat) over a fixed number of
calls holds to about ±5 %. So every server here — the bare grpc.aio echo server, the bare
forwarder (grpc.aio + the adapter + the HTTP client, no pipeline), the gateway with the
production config, the gateway with everything optional off, and that base with each
feature on — runs at once; each gets a warm-up, then `--rounds` rounds in which every
server in turn takes `--calls` unary calls from h2load; the table gives each server's
median CPU µs per call and the spread of its rounds, with its RPS beside. The forwarder
and the production config also relay streams of one word and of 64, from a simulator
that sends 200 words a second: the difference, over the 63 more chunks, is the CPU each
relayed chunk costs. Every call of a round
must succeed and, but the echo's, reach the simulator, or the round is not counted.

    python -m bench.cpu [--calls 4000] [--rounds 5]

Writes the `## CPU per call` section of bench/RESULTS.md (a full `make bench` runs it
first) and prints the targets as PASS/FAIL lines.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import h2load, procs, report, stack
from bench.h2load import Load, LoadResult
from bench.results import Target

BENCH_DIR = Path(__file__).resolve().parent
HEADING = report.CPU_HEADING
#: h2load's shape: enough calls in flight to keep the server busy, not a queue.
CLIENTS, STREAMS = 4, 8
WARMUP_CALLS = 2_000

ECHO, FORWARDER = "bare grpc.aio echo", "bare forwarder"
PRODUCTION, BASE = "gateway, production config", "gateway, everything optional off"
#: The long streams' words; each stream row has a one-word twin.
STREAM_TOKENS = 64
#: Stream rows' words per second (their own simulator): slow enough that every word is
#: a network read and a chunk of its own (at full speed the adapters fold the words of
#: one read into one chunk), 32 streams at once well within one core.
STREAM_PACE = 200.0
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
    #: StreamChatCompletion calls, each a stream of this many words (0: unary calls).
    stream_tokens: int = 0
    #: This row's calls per round, as a share of `--calls` (long streams take fewer).
    share: float = 1.0
    #: Its calls reach the simulator (all but the echo's).
    forwards: bool = True


def _gateway(
    name: str,
    *,
    http: bool = False,
    log_level: str = "warning",
    stream_tokens: int = 0,
    share: float = 1.0,
    **switches: Any,
) -> Server:
    def start(workdir: Path, sim: stack.Endpoint) -> contextlib.AbstractContextManager[Any]:
        tree = stack.gateway_tree(sim.http, http_door=http, **switches)
        return stack.gateway(workdir, tree, name=f"cpu-{name}", log_level=log_level)

    auth = bool(switches.get("auth"))
    return Server(start, auth=auth, http=http, stream_tokens=stream_tokens, share=share)


def _forwarder(stream_tokens: int = 0, share: float = 1.0) -> Server:
    return Server(
        lambda workdir, sim: stack.forwarder(workdir, sim),
        stream_tokens=stream_tokens,
        share=share,
    )


def _stream_row_names(name: str) -> tuple[str, str]:
    return f"{name}, streams of 1 word", f"{name}, streams of {STREAM_TOKENS} words"


def _stream_rows(name: str, server: Callable[[int, float], Server]) -> dict[str, Server]:
    """`name` relaying streams of one word and of STREAM_TOKENS (an eighth as many)."""
    one, many = _stream_row_names(name)
    return {one: server(1, 0.5), many: server(STREAM_TOKENS, 0.125)}


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
    ECHO: Server(lambda workdir, sim: stack.echo_server(workdir), forwards=False),
    FORWARDER: _forwarder(),
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
    **_stream_rows(FORWARDER, _forwarder),
    **_stream_rows(
        PRODUCTION,
        lambda tokens, share: _gateway(
            f"production-stream-{tokens}", stream_tokens=tokens, share=share, **PRODUCTION_SWITCHES
        ),
    ),
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
    template = stack.grpc_unary_load(
        endpoint,
        workdir,
        clients=CLIENTS,
        streams=STREAMS,
        duration=1,
        warmup=0,
        auth=server.auth,
        stream_tokens=server.stream_tokens,
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
    label: str,
    endpoint: stack.Endpoint,
    sim: stack.Endpoint,
    workdir: Path,
    calls: int,
    server: Server,
) -> Sample | None:
    """One round: the server's CPU over `calls` calls, or None if they did not all succeed
    (h2load sees HTTP statuses only: a refused call reaches no upstream)."""
    calls = max(1, round(calls * server.share))
    upstream = stack.upstream_requests(sim)
    before = procs.cpu_seconds(endpoint.pid)
    result = h2load.run(label, _load(endpoint, workdir, calls, server), workdir)
    spent = procs.cpu_seconds(endpoint.pid) - before
    if not result.ok or result.succeeded != calls:
        print(f"  {label}: {result.succeeded}/{calls} calls {result.error}", flush=True)
        return None
    forwarded = stack.upstream_requests(sim) - upstream
    if server.forwards and forwarded != calls:
        print(f"  {label}: {forwarded} of {calls} calls reached the simulator", flush=True)
        return None
    return Sample(spent / calls * 1e6, result)


def run(workdir: Path, calls: int, rounds: int, only: list[str] | None = None) -> dict[str, Rounds]:
    """Every server started at once, warmed up, then measured in turn, `rounds` times."""
    chosen = {name: SERVERS[name] for name in (only or SERVERS)}
    results = {name: Rounds() for name in chosen}
    with (
        contextlib.ExitStack() as started,
        stack.simulator(workdir) as sim,
        stack.simulator(workdir, tokens_per_second=STREAM_PACE, name="paced-simulator") as paced,
    ):
        upstream = {name: paced if s.stream_tokens else sim for name, s in chosen.items()}
        endpoints = {
            name: started.enter_context(s.start(workdir, upstream[name]))
            for name, s in chosen.items()
        }
        for name, endpoint in endpoints.items():
            measure(f"warm {name}", endpoint, upstream[name], workdir, WARMUP_CALLS, chosen[name])
        for round_number in range(rounds):
            for name, endpoint in endpoints.items():
                sample = measure(name, endpoint, upstream[name], workdir, calls, chosen[name])
                if sample is None:
                    continue
                into = results[name]
                into.cpu_us.append(sample.cpu_us)
                into.rps.append(sample.load.rps)
                into.p50_ms.append(sample.load.latency.p50_ms)
            line = "  ".join(f"{n[:14]} {r.cpu_us[-1]:.0f}" for n, r in results.items() if r.cpu_us)
            print(f"round {round_number + 1}: {line}", flush=True)
    return results


def _target(name: str, value: float, limit: float, unit: str) -> Target:
    return Target(name, value, limit, unit, higher_is_better=False)


def chunk_cost(median: dict[str, float], name: str) -> float:
    """CPU µs per relayed chunk of `name`: its long streams less its one-word streams."""
    one, many = _stream_row_names(name)
    if one not in median or many not in median:
        return math.nan
    return (median[many] - median[one]) / (STREAM_TOKENS - 1)


def checks(results: dict[str, Rounds]) -> list[Target]:
    found: list[Target] = []
    median = {name: r.median for name, r in results.items() if r.cpu_us}
    if PRODUCTION in median and ECHO in median:
        found.append(
            _target(
                "CPU per call, production config / bare echo",
                median[PRODUCTION] / median[ECHO],
                1.5,
                "x",
            )
        )
    if PRODUCTION in median and FORWARDER in median:
        ratio = median[PRODUCTION] / median[FORWARDER]
        found.append(_target("CPU per call, production config / bare forwarder", ratio, 1.2, "x"))
    if HTTP_DOOR in median and PRODUCTION in median:
        ratio = median[HTTP_DOOR] / median[PRODUCTION]
        found.append(
            _target("CPU per call, HTTP door / gRPC door (production config)", ratio, 1.3, "x")
        )
    gateway_chunk, forwarder_chunk = chunk_cost(median, PRODUCTION), chunk_cost(median, FORWARDER)
    if not math.isnan(gateway_chunk + forwarder_chunk):
        ratio = gateway_chunk / forwarder_chunk
        found.append(
            _target("CPU per relayed chunk, production config / bare forwarder", ratio, 1.1, "x")
        )
    if BASE in median:
        for name, value in median.items():
            if name.startswith(FEATURE_PREFIX):
                found.append(_target(f"CPU per call, {name[2:]}", value - median[BASE], 10.0, "µs"))
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
    median = {name: r.median for name, r in results.items() if r.cpu_us}
    chunks = {name: chunk_cost(median, name) for name in (FORWARDER, PRODUCTION)}
    if not any(math.isnan(cost) for cost in chunks.values()):
        lines += [
            "",
            f"Per relayed chunk (a stream of {STREAM_TOKENS} words less a stream of one, over "
            f"{STREAM_TOKENS - 1} more chunks, the words {STREAM_PACE:g} a second): "
            + ", ".join(f"{name} {cost:.1f} µs" for name, cost in chunks.items())
            + ".",
        ]
    lines += ["", "```", *(check.line() for check in checks(results)), "```"]
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
