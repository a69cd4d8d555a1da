"""The HTTP door beside the gRPC door and LiteLLM's proxy, on the same upstream.

One simulator (zero latency, the same 16-word answer); one gateway process serving both
doors (auth and the limiter on, as in sections 1-5); LiteLLM's proxy (1 worker) when
`bench/.litellm-venv` has it (`--peers litellm` of `python -m bench` installs it). For
each side, interleaved over `--rounds`:

- added latency: one request at a time for `--seconds`, p50 and p99, less the same
  request sent straight to the simulator (h2load --h1, c=1);
- RPS and CPU: a fixed number of requests with as many in flight as section 1 uses
  (gRPC 4 connections x 16 streams; HTTP 64 connections, one request each; LiteLLM 16,
  which it serves best), the requests per second, and the server process's CPU
  (utime + stime) per request.

    python -m bench.http_door [--rounds 3] [--seconds 5] [--requests 4000]

Writes the `## The HTTP door` section of bench/RESULTS.md, with the HTTP servers'
bare CPU per request (`bench.http_servers`) the door's server was chosen by.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import h2load, http_servers, litellm_peer, procs, report, stack
from bench.direct import http_unary_load
from bench.h2load import Load, LoadResult

BENCH_DIR = Path(__file__).resolve().parent
HEADING = report.HTTP_DOOR_HEADING
GRPC, HTTP, LITELLM = "gRPC door", "HTTP door", "LiteLLM proxy"
#: LiteLLM serves ~100 requests a second here: fewer requests keep its rounds short.
LITELLM_SHARE = 0.125


@dataclass
class Side:
    """One server's measurements over the rounds."""

    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    failures: int = 0


@dataclass(frozen=True)
class Target:
    pid: int
    #: A load of one request at a time for `seconds`, or of `calls` requests at full tilt.
    load: Callable[[int, float, int | None], Load]


def _c1(ctx_dir: Path, target: Target, seconds: float, label: str) -> LoadResult:
    return h2load.run(label, target.load(1, seconds, None), ctx_dir)


def _full(ctx_dir: Path, target: Target, calls: int, label: str) -> tuple[LoadResult, float]:
    before = procs.cpu_seconds(target.pid)
    result = h2load.run(label, target.load(0, 0, calls), ctx_dir)
    spent = procs.cpu_seconds(target.pid) - before
    return result, spent / max(result.succeeded, 1) * 1e6


def _targets(
    workdir: Path,
    sim: stack.Endpoint,
    gateway: stack.Endpoint,
    lite: tuple[stack.Endpoint, str] | None,
) -> dict[str, Target]:
    def grpc(concurrency: int, seconds: float, calls: int | None) -> Load:
        clients, streams = (1, 1) if concurrency == 1 else (4, 16)
        load = stack.grpc_unary_load(
            gateway, workdir, clients=clients, streams=streams, duration=seconds, warmup=1
        )
        return _fixed(load, calls)

    def http(concurrency: int, seconds: float, calls: int | None) -> Load:
        return stack.http_door_load(
            gateway,
            workdir,
            concurrency=concurrency or 64,
            duration=seconds,
            warmup=0 if calls else 1,
            calls=calls,
        )

    targets = {GRPC: Target(gateway.pid, grpc), HTTP: Target(gateway.pid, http)}
    if lite is not None:
        endpoint, key = lite

        def litellm(concurrency: int, seconds: float, calls: int | None) -> Load:
            load = http_unary_load(
                sim,
                workdir,
                concurrency=concurrency or 16,
                duration=seconds,
                warmup=1,
                url=f"{endpoint.http}/v1/chat/completions",
                headers=(f"authorization: Bearer {key}",),
                model=stack.MODEL,
            )
            return _fixed(load, calls)

        targets[LITELLM] = Target(endpoint.pid, litellm)
    return targets


def _fixed(load: Load, calls: int | None) -> Load:
    if calls is None:
        return load
    return Load(
        url=load.url,
        body=load.body,
        headers=load.headers,
        clients=load.clients,
        streams_per_client=load.streams_per_client,
        duration=0,
        warmup=0,
        h1=load.h1,
        calls=calls,
    )


def run(
    workdir: Path, rounds: int, seconds: float, requests: int
) -> tuple[dict[str, Side], Side, str]:
    """(each side, the direct baseline, a note when LiteLLM was not measured)."""
    note = litellm_peer.ensure_installed(workdir / "litellm-install.log")
    sides: dict[str, Side] = {}
    direct = Side()
    with contextlib.ExitStack() as started:
        sim = started.enter_context(stack.simulator(workdir))
        tree = stack.gateway_tree(sim.http, http_door=True)
        gateway = started.enter_context(stack.gateway(workdir, tree, name="http-door"))
        lite = None
        if not note:
            try:
                lite = started.enter_context(litellm_peer.proxy(workdir, sim))
            except (RuntimeError, TimeoutError) as error:
                note = f"LiteLLM not measured: it did not start ({error}); see litellm.log"
        targets = _targets(workdir, sim, gateway, lite)
        sides = {name: Side() for name in targets}
        for name, target in targets.items():  # warm up
            _full(workdir, target, max(int(requests * LITELLM_SHARE), 200), f"warm {name}")
        for number in range(rounds):
            baseline = h2load.run(
                "direct c=1",
                http_unary_load(sim, workdir, concurrency=1, duration=seconds, warmup=1),
                workdir,
            )
            direct.p50_ms.append(baseline.latency.p50_ms)
            direct.p99_ms.append(baseline.latency.p99_ms)
            for name, target in targets.items():
                side = sides[name]
                c1 = _c1(workdir, target, seconds, f"{name} c=1")
                side.p50_ms.append(c1.latency.p50_ms)
                side.p99_ms.append(c1.latency.p99_ms)
                calls = int(requests * LITELLM_SHARE) if name == LITELLM else requests
                full, cpu_us = _full(workdir, target, calls, name)
                side.rps.append(full.rps)
                side.cpu_us.append(cpu_us)
                side.failures += full.failed + full.errored + full.non_2xx + c1.non_2xx
            print(
                f"round {number + 1}: "
                + "  ".join(
                    f"{n}: +{s.p50_ms[-1] - direct.p50_ms[-1]:.3f} ms, {s.rps[-1]:.0f}/s, "
                    f"{s.cpu_us[-1]:.0f} µs"
                    for n, s in sides.items()
                ),
                flush=True,
            )
    return sides, direct, note


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def section(
    sides: dict[str, Side],
    direct: Side,
    note: str,
    servers: dict[str, list[float]],
    args: argparse.Namespace,
) -> list[str]:
    from bench.__main__ import written_by

    lines = [
        HEADING,
        "",
        f"{written_by('bench.http_door')}. One simulator (zero latency, a 16-word answer), "
        "one gateway process serving both doors (auth and the limiter on), LiteLLM's proxy "
        f"(1 worker) on the same simulator; {args.rounds} rounds, sides interleaved. Added "
        f"latency: one request at a time for {args.seconds:g} s, less the same request sent "
        "straight to the simulator. RPS and CPU: "
        f"{args.requests:,} requests (LiteLLM {int(args.requests * LITELLM_SHARE):,}) with "
        "gRPC 4 connections x 16 streams, the HTTP door 64 connections, LiteLLM 16; CPU is "
        "the serving process's utime + stime per request. Medians of the rounds.",
        "",
        "| side | added p50 ms (c=1) | added p99 ms (c=1) | RPS | CPU µs per request | failures |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base50, base99 = _median(direct.p50_ms), _median(direct.p99_ms)
    for name, side in sides.items():
        lines.append(
            f"| {name} | {_median(side.p50_ms) - base50:.3f} | {_median(side.p99_ms) - base99:.3f} "
            f"| {_median(side.rps):,.0f} | {_median(side.cpu_us):.0f} | {side.failures} |"
        )
    lines.append(f"| direct to the simulator (p50, p99) | {base50:.3f} | {base99:.3f} | | | |")
    if note:
        lines += ["", f"- {note}"]
    if GRPC in sides and HTTP in sides:
        ratio = _median(sides[HTTP].cpu_us) / _median(sides[GRPC].cpu_us)
        lines += ["", f"- HTTP door / gRPC door, CPU per request: {ratio:.2f}x (target ≤ 1.3x)."]
    if servers:
        lines += [
            "",
            "The door's server, chosen by CPU per request (`python -m bench.http_servers`: each "
            "candidate bare, serving one route as the door does, h2load --h1 over 32 "
            "connections):",
            "",
            *http_servers.section_rows(servers),
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.http_door", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=4_000)
    parser.add_argument("--server-requests", type=int, default=20_000)
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    if not h2load.available():
        print("bench.http_door: h2load not found; install it: apt-get install -y nghttp2-client")
        return 2
    procs.install_teardown()
    workdir = BENCH_DIR / ".work"
    workdir.mkdir(exist_ok=True)
    try:
        servers = http_servers.run(args.server_requests, args.rounds, workdir)
        sides, direct, note = run(workdir, args.rounds, args.seconds, args.requests)
    finally:
        procs.stop_all()
    report.replace_section(args.output, HEADING, section(sides, direct, note, servers, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
