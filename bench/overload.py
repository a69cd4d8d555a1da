"""`python -m bench.overload` / `make overload`: what callers get above saturation.

Starts the zero-latency simulator and one gateway process (auth and limiter on),
measures its peak (h2load, 4 connections x 16 streams), then offers `--factor` times
that peak, open-loop, for `--duration` s: h2load at a fixed rate with up to 8 x 256
calls in flight, each with a 2 s deadline (grpc-timeout), while the project's own
client samples grpc-status and latency beside it with the same deadline (h2load cannot
see grpc-status). Once per `server.max_pending_calls` in SETTINGS, a fresh gateway
each. After the load: is the process alive, and how soon does a call succeed again?

Last, how fast the same gateway refuses: with its rate limit spent, every call is
refused by the interceptors (RESOURCE_EXHAUSTED), and h2load measures that rate at
saturation. Core refuses the excess CANCELLED; the gateway could only answer those calls
itself if refusing them cost far less than serving them.

The issue's target: zero errors below saturation (sections 1 and 2 of the benchmark);
above it clean RESOURCE_EXHAUSTED or UNAVAILABLE, never a hang or a crash. Writes the
`## Overload` section of bench/RESULTS.md (a full `python -m bench` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ai_service_client import AsyncAIClient
from bench import h2load, procs, report, stack
from bench.__main__ import written_by
from bench.grpc_check import sample_statuses
from bench.h2load import Percentiles
from bench.results import Target
from bench.sections import GRPC_CLIENTS, GRPC_STREAMS

BENCH_DIR = Path(__file__).resolve().parent
#: Label → server.max_pending_calls (1000 is the gateway's default, and gRPC core's).
SETTINGS: dict[str, int] = {"default": 1000, "lowered": 100}
#: Every call's deadline, h2load's and the sampler's alike.
DEADLINE = 2.0
#: A sampled call slower than its deadline by more than this counts as a hang.
HANG_MARGIN = 0.5
#: Open-loop shape: h2load connections x the most calls each may have in flight.
OVER_CLIENTS, OVER_STREAMS = 8, 256
#: Statuses the target accepts for the calls the gateway cannot take.
CLEAN = {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE"}


@dataclass
class Run:
    label: str
    max_pending: int
    offered: float
    load: h2load.LoadResult
    statuses: dict[str, int]
    ok_latency: Percentiles
    slowest: float
    rss_before: int
    rss_after: int
    alive: bool
    recovered_in: float | None

    @property
    def ok_share(self) -> float:
        return self.statuses.get("OK", 0) / max(1, sum(self.statuses.values()))

    @property
    def hung(self) -> bool:
        return self.slowest > DEADLINE + HANG_MARGIN or not self.alive


def peak_rps(workdir: Path, gw: stack.Endpoint, seconds: float, label: str = "peak") -> float:
    load = stack.grpc_unary_load(
        gw, workdir, clients=GRPC_CLIENTS, streams=GRPC_STREAMS, duration=seconds, warmup=1.0
    )
    return h2load.run(f"gateway {label}", load, workdir).rps


def refusal_rps(workdir: Path, sim: stack.Endpoint, seconds: float) -> float:
    """Calls/s one gateway answers when it refuses every one (its rate limit is spent)."""
    tree = stack.gateway_tree(sim.http)
    tree["rate_limit"]["requests_per_minute"] = 1
    upstream_before = stack.upstream_requests(sim)
    with stack.gateway(workdir, tree) as gw:
        rps = peak_rps(workdir, gw, seconds, "refusing")
    served = stack.upstream_requests(sim) - upstream_before
    if served > 1:  # the bucket's one call: anything more means calls were not refused
        raise RuntimeError(f"the refusing gateway sent {served} requests upstream")
    return rps


async def first_success(target: str, within: float) -> float | None:
    """Seconds until a call succeeds again (None: not within `within`)."""
    started = time.monotonic()
    async with AsyncAIClient(target, stack.BENCH_KEY, timeout=1.0) as client:
        while time.monotonic() - started < within:
            try:
                await client.chat(stack.chat_request())
                return time.monotonic() - started
            except Exception:  # still recovering: any failure means try again
                await asyncio.sleep(0.02)
    return None


def overload(
    workdir: Path, gw: stack.Endpoint, label: str, max_pending: int, rate: float, seconds: float
) -> Run:
    load = stack.grpc_unary_load(
        gw,
        workdir,
        clients=OVER_CLIENTS,
        streams=OVER_STREAMS,
        duration=seconds,
        warmup=1.0,
        rate=rate,
        deadline=DEADLINE,
    )
    calls: list[tuple[str, float]] = []
    rss_before = procs.rss_bytes(gw.pid)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(h2load.run, f"overload {label}", load, workdir)
        statuses = asyncio.run(
            sample_statuses(
                gw.address,
                stack.BENCH_KEY,
                seconds=load.warmup + seconds - 0.5,
                concurrency=4,
                timeout=DEADLINE,
                calls=calls,
            )
        )
        result = running.result()
    rss_after = procs.rss_bytes(gw.pid)
    alive = procs.alive(gw.pid)
    recovered = asyncio.run(first_success(gw.address, 5.0)) if alive else None
    return Run(
        label=label,
        max_pending=max_pending,
        offered=rate,
        load=result,
        statuses=dict(Counter(statuses).most_common()),
        ok_latency=Percentiles.of([s * 1000 for status, s in calls if status == "OK"]),
        slowest=max((s for _, s in calls), default=0.0),
        rss_before=rss_before,
        rss_after=rss_after,
        alive=alive,
        recovered_in=recovered,
    )


def served_while_refusing(peak: float, refusing: float, offered: float) -> float:
    """Calls/s served if every offered call is taken and the rest refused: serving costs
    1/peak of the process per call and refusing 1/refusing. 0 when refusing is no
    cheaper than serving (refusing more never frees room to serve) or when refusing
    every offered call alone is more than the process can do."""
    if refusing <= peak or offered >= refusing:
        return 0.0
    return (1 - offered / refusing) / (1 / peak - 1 / refusing)


def section(
    runs: list[Run], peak: float, refusing: float, factor: float, seconds: float
) -> list[str]:
    lines = [
        report.OVERLOAD_HEADING,
        "",
        f"{written_by('bench.overload')}: "
        f"one gateway process (auth and limiter on) on the zero-latency simulator; its peak "
        f"{peak:.0f} RPS (h2load {GRPC_CLIENTS} x {GRPC_STREAMS}), then {factor:g}x that "
        f"offered open-loop for {seconds:g} s (h2load at a fixed rate, up to {OVER_CLIENTS} x "
        f"{OVER_STREAMS} calls in flight), every call with a {DEADLINE:g} s deadline; statuses "
        f"and latencies sampled beside it by the project's client with the same deadline.",
        "",
        "| server.max_pending_calls | offered RPS | answered RPS | sampled statuses | "
        "OK share | OK p50 / p99 ms | slowest sampled s | RSS MiB before → after | "
        "call OK again after |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        statuses = ", ".join(f"{name} {count}" for name, count in run.statuses.items())
        recovered = f"{run.recovered_in * 1000:.0f} ms" if run.recovered_in is not None else "never"
        lines.append(
            f"| {run.max_pending} ({run.label}) | {run.offered:.0f} | {run.load.rps:.0f} | "
            f"{statuses} | {run.ok_share:.0%} | {run.ok_latency.p50_ms:.0f} / "
            f"{run.ok_latency.p99_ms:.0f} | {run.slowest:.2f} | "
            f"{run.rss_before / 2**20:.0f} → {run.rss_after / 2**20:.0f} | "
            f"{recovered if run.alive else 'process gone'} |"
        )
    offered = factor * peak
    lines += [
        "",
        f"Refusing instead: the same gateway with its rate limit spent refuses every call "
        f"(RESOURCE_EXHAUSTED, from the interceptors) at {refusing:.0f} calls/s, "
        f"{refusing / max(peak, 1.0):.0%} of its serving peak: a refusal costs the process "
        f"{1e6 / max(refusing, 1.0):.0f} µs, a served call {1e6 / max(peak, 1.0):.0f} µs. "
        + (
            f"Refusing all {offered:.0f} calls/s offered would alone take "
            f"{offered / max(refusing, 1.0):.0%} of the process: the gateway cannot answer the "
            f"excess itself."
            if offered >= refusing
            else f"Were the gateway to take all {offered:.0f} calls/s offered and refuse what "
            f"it cannot serve, it would serve "
            f"{served_while_refusing(peak, refusing, offered):.0f} calls/s."
        ),
    ]
    lines += ["", "```", *(target.line() for target in targets(runs)), "```", ""]
    return lines


def targets(runs: list[Run]) -> list[Target]:
    """Above saturation: no hang or crash, and every call not served refused cleanly."""
    broken = sum(run.hung or run.recovered_in is None for run in runs)
    unserved = Counter[str]()
    for run in runs:
        unserved.update({name: n for name, n in run.statuses.items() if name != "OK"})
    refused = sum(n for name, n in unserved.items() if name in CLEAN)
    return [
        Target(
            "above saturation, runs with a sampled call past its deadline "
            f"(+{HANG_MARGIN:g} s), a crash or no recovery",
            broken,
            0,
            "",
            higher_is_better=False,
        ),
        Target(
            "above saturation, calls not served that end RESOURCE_EXHAUSTED or UNAVAILABLE",
            refused / sum(unserved.values()) * 100 if unserved else 100.0,
            100,
            "%",
            higher_is_better=True,
            note=", ".join(f"{name} {n}" for name, n in unserved.most_common()),
        ),
    ]


def run(workdir: Path, seconds: float, factor: float) -> tuple[list[str], list[Target]]:
    """Both settings above saturation: the report's section, and its targets."""
    runs: list[Run] = []
    peak = 0.0
    with stack.simulator(workdir) as sim:
        for label, max_pending in SETTINGS.items():
            tree = stack.gateway_tree(sim.http)
            tree["server"]["max_pending_calls"] = max_pending
            with stack.gateway(workdir, tree) as gw:
                peak = peak or peak_rps(workdir, gw, seconds)
                run = overload(workdir, gw, label, max_pending, factor * peak, seconds)
            print(
                f"  max_pending_calls {max_pending}: answered {run.load.rps:.0f}/s, "
                f"sampled {run.statuses}, OK p50 {run.ok_latency.p50_ms:.0f} ms, "
                f"slowest {run.slowest:.2f} s, recovered {run.recovered_in}",
                flush=True,
            )
            runs.append(run)
        refusing = refusal_rps(workdir, sim, seconds)
        print(f"  refusing every call: {refusing:.0f}/s", flush=True)
    return section(runs, peak, refusing, factor, seconds), targets(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.overload", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of overload")
    parser.add_argument("--factor", type=float, default=2.0, help="offered load / peak")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    procs.install_teardown()
    procs.raise_fd_limit()
    workdir = BENCH_DIR / ".work"
    workdir.mkdir(exist_ok=True)
    lines, _ = run(workdir, args.duration, args.factor)
    print("\n".join(lines))
    report.replace_section(args.output, report.OVERLOAD_HEADING, lines)
    print(f"wrote the overload section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
