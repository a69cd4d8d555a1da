"""`python -m bench.grpc_core`: does a gRPC core setting make grpc.aio cheaper here?

gRPC core reads its experiments from `GRPC_EXPERIMENTS` when it starts; a leading `-`
turns a default-on one off. This runs the bare echo server, the bare forwarder and the
gateway (auth and limiter on) under each setting in `SETTINGS`, one after the other on
the same zero-latency simulator, at c=1 and at saturation, and writes the table into the
`## gRPC core options` section of bench/RESULTS.md (a full `python -m bench` keeps it).
A setting is worth adopting only if it helps the gateway, not just the echo server.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

from bench import h2load, procs, report, stack
from bench.__main__ import written_by
from bench.sections import GRPC_CLIENTS, GRPC_STREAMS

BENCH_DIR = Path(__file__).resolve().parent
#: Label → environment of the measured server.
SETTINGS: dict[str, dict[str, str]] = {
    "default (EventEngine listener)": {},
    "iomgr listener (GRPC_EXPERIMENTS=-event_engine_listener)": {
        "GRPC_EXPERIMENTS": "-event_engine_listener"
    },
}
Server = Callable[
    [Path, stack.Endpoint, dict[str, str]], contextlib.AbstractContextManager[stack.Endpoint]
]


SERVERS: dict[str, Server] = {
    "echo": lambda workdir, sim, env: stack.echo_server(workdir, env),
    "forwarder": lambda workdir, sim, env: stack.forwarder(workdir, sim, env),
    "gateway": lambda workdir, sim, env: stack.gateway(
        workdir, stack.gateway_tree(sim.http), env=env
    ),
}


def measure(workdir: Path, endpoint: stack.Endpoint, c1: bool, seconds: float) -> h2load.LoadResult:
    clients, streams = (1, 1) if c1 else (GRPC_CLIENTS, GRPC_STREAMS)
    load = stack.grpc_unary_load(
        endpoint, workdir, clients=clients, streams=streams, duration=seconds, warmup=1.0
    )
    return h2load.run(f"{endpoint.name} {'c=1' if c1 else 'saturated'}", load, workdir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.grpc_core", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    procs.install_teardown()
    workdir = BENCH_DIR / ".work"
    workdir.mkdir(exist_ok=True)
    rows: list[str] = []
    with stack.simulator(workdir) as sim:
        for server, start in SERVERS.items():
            for setting, env in SETTINGS.items():
                with start(workdir, sim, env) as endpoint:
                    c1 = measure(workdir, endpoint, True, args.duration)
                    full = measure(workdir, endpoint, False, args.duration)
                failures = sum(r.failed + r.errored + r.non_2xx for r in (c1, full))
                row = (
                    f"| {server} | {setting} | {c1.latency.p50_ms:.3f} | {c1.latency.p99_ms:.3f} "
                    f"| {full.rps:.0f} | {failures} |"
                )
                print(row, flush=True)
                rows.append(row)
    section = [
        report.GRPC_CORE_HEADING,
        "",
        f"{written_by('bench.grpc_core')}; "
        f"{args.duration:g} s per run, zero-latency simulator, auth and limiter on in the "
        f"gateway; c=1 is one call at a time, saturated is h2load {GRPC_CLIENTS} connections "
        f"x {GRPC_STREAMS} streams.",
        "",
        "| server | gRPC core setting | c=1 p50 ms | c=1 p99 ms | saturated RPS | failures |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    report.replace_section(args.output, report.GRPC_CORE_HEADING, section)
    print(f"wrote the gRPC core options section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
