"""`python -m bench.soak` / `make soak`: a steady load for minutes; do RSS or fds creep?

Starts the simulator (a few ms to first byte, paced streams) and one gateway process
(`--workers 1`), then drives a fixed rate of calls from asyncio gRPC clients: ~60% unary,
~30% streams read to the end, ~10% streams cancelled after a few chunks. Every 10 s it
samples the gateway's RSS (VmRSS) and open file descriptors. At the end it fits a
least-squares slope (per minute) to the samples after the warm-up, prints it, and
writes/replaces the `## Soak` section of bench/RESULTS.md plus `soak.png`.

An error is any status other than OK, and other than CANCELLED on the calls this driver
cancelled itself. The load is open-loop (calls start on schedule whether or not earlier
ones finished) and bounded: beyond MAX_IN_FLIGHT a due call is skipped and counted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import orjson

from ai_service_protos import ai_service_pb2_grpc as pb_grpc
from bench import procs, report, stack
from bench.__main__ import git_head, utc_now
from bench.procs import cpu_seconds, rss_bytes

BENCH_DIR = Path(__file__).resolve().parent
#: The upstream: 5 ms to first byte, 200 tokens/s, so a 20-token stream lasts ~100 ms.
SIM_LATENCY_MS = 5.0
SIM_TOKENS_PER_SECOND = 200.0
UNARY_PROMPT = "/tokens 16 soak"
STREAM_PROMPT = "/tokens 20 soak stream"
#: Cancelled streams are cut after this many chunks (~25 ms into a ~100 ms stream).
CANCEL_AFTER_CHUNKS = 5
MIX = {"unary": 0.6, "stream": 0.3, "cancelled stream": 0.1}
SAMPLE_SECONDS = 10.0
WARMUP_SECONDS = 60.0
MAX_IN_FLIGHT = 1_000
CALL_TIMEOUT_SECONDS = 30.0
#: The verdict: flat when RSS grows less than this (MiB/min) and fds less than this (/min).
RSS_FLAT_MIB_PER_MINUTE = 1.0
FDS_FLAT_PER_MINUTE = 0.5
MIB = 2**20


@dataclass
class Sample:
    seconds: float
    rss: int
    fds: int
    cpu_seconds: float
    calls: int


@dataclass
class Tally:
    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    #: Final status per kind ("cancelled stream: CANCELLED" ...): were streams really cut?
    statuses: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    in_flight: int = 0
    #: Unary latency (ms) per sample window, to see whether it drifts.
    unary_ms: list[list[float]] = field(default_factory=lambda: [[]])


@dataclass
class Soak:
    rate: float
    duration: float
    warmup: float = WARMUP_SECONDS
    samples: list[Sample] = field(default_factory=list)
    after: Sample | None = None
    tally: Tally = field(default_factory=Tally)
    rss_slope: float = math.nan
    fds_slope: float = math.nan
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def steady(self) -> list[Sample]:
        return [s for s in self.samples if s.seconds >= self.warmup]

    @property
    def flat(self) -> bool:
        return abs(self.rss_slope) < RSS_FLAT_MIB_PER_MINUTE and (
            abs(self.fds_slope) < FDS_FLAT_PER_MINUTE
        )


class Driver:
    """The three kinds of call, on one channel, each returning its final status code."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.stub = pb_grpc.AIServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {stack.BENCH_KEY}"),)
        self.unary_request = stack.chat_request(UNARY_PROMPT)
        self.stream_request = stack.chat_request(STREAM_PROMPT)

    async def unary(self) -> grpc.StatusCode:
        call = self.stub.ChatCompletion(
            self.unary_request, metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS
        )
        await call
        code: grpc.StatusCode = await call.code()
        return code

    async def stream(self, cancel_after: int | None = None) -> grpc.StatusCode:
        call = self.stub.StreamChatCompletion(
            self.stream_request, metadata=self.metadata, timeout=CALL_TIMEOUT_SECONDS
        )
        chunks = 0
        async for _chunk in call:
            chunks += 1
            if cancel_after is not None and chunks >= cancel_after:
                call.cancel()
                break
        code: grpc.StatusCode = await call.code()
        return code

    async def close(self) -> None:
        await self.channel.close(grace=None)


async def one_call(driver: Driver, kind: str, tally: Tally) -> None:
    tally.in_flight += 1
    started = time.monotonic()
    expected = {grpc.StatusCode.OK}
    try:
        if kind == "unary":
            code = await driver.unary()
            tally.unary_ms[-1].append((time.monotonic() - started) * 1000)
        elif kind == "stream":
            code = await driver.stream()
        else:
            expected.add(grpc.StatusCode.CANCELLED)
            code = await driver.stream(cancel_after=CANCEL_AFTER_CHUNKS)
    except grpc.aio.AioRpcError as error:
        code = error.code()
    except Exception as error:  # a transport failure is a finding too
        tally.errors[f"{kind}: {type(error).__name__}"] += 1
        return
    finally:
        tally.in_flight -= 1
        tally.calls[kind] += 1
    tally.statuses[f"{kind}: {code.name}"] += 1
    if code not in expected:
        tally.errors[f"{kind}: {code.name}"] += 1


async def drive(driver: Driver, soak: Soak) -> None:
    """Start calls on a fixed schedule (open loop) until the duration is over."""
    pick = random.Random(8)
    kinds, weights = list(MIX), list(MIX.values())
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    for i in range(int(soak.duration * soak.rate)):
        delay = start + i / soak.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if soak.tally.in_flight >= MAX_IN_FLIGHT:
            soak.tally.skipped += 1
            continue
        task = asyncio.create_task(one_call(driver, pick.choices(kinds, weights)[0], soak.tally))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=CALL_TIMEOUT_SECONDS + 5)


def take_sample(pid: int, started: float, calls: int) -> Sample:
    return Sample(
        seconds=time.monotonic() - started,
        rss=rss_bytes(pid),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        cpu_seconds=cpu_seconds(pid),
        calls=calls,
    )


async def sample_every(pid: int, soak: Soak, started: float) -> None:
    """A sample at 0, 10, 20 ... s after `started` (on schedule, never twice per slot)."""
    for slot in itertools.count():
        await asyncio.sleep(max(0.0, started + slot * SAMPLE_SECONDS - time.monotonic()))
        sample = take_sample(pid, started, soak.tally.calls.total())
        soak.samples.append(sample)
        soak.tally.unary_ms.append([])
        print(
            f"  {sample.seconds:6.0f} s  RSS {sample.rss / MIB:7.1f} MiB  fds {sample.fds:5d}  "
            f"calls {sample.calls:7d}  errors {soak.tally.errors.total()}  "
            f"in flight {soak.tally.in_flight}",
            flush=True,
        )


async def run_soak(gateway: stack.Endpoint, soak: Soak) -> None:
    driver = Driver(gateway.address)
    started = time.monotonic()
    sampler = asyncio.create_task(sample_every(gateway.pid, soak, started))
    try:
        await drive(driver, soak)
    finally:
        sampler.cancel()
        await driver.close()
    # One last sample at the end of the load (unless the sampler just took one) ...
    if not soak.samples or time.monotonic() - started - soak.samples[-1].seconds > 1.0:
        soak.samples.append(take_sample(gateway.pid, started, soak.tally.calls.total()))
    # ... and one after a short idle.
    await asyncio.sleep(SAMPLE_SECONDS)
    soak.after = take_sample(gateway.pid, started, soak.tally.calls.total())


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, in value per minute."""
    if len(points) < 2:
        return math.nan
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx * 60 if sxx else math.nan


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def window_latency(soak: Soak, first: bool) -> tuple[float, float]:
    """Unary p50/p99 (ms) over the first minute after warm-up, or over the last minute."""
    per_minute = max(1, int(60 / SAMPLE_SECONDS))
    skip = int(soak.warmup / SAMPLE_SECONDS) + 1
    windows = [w for w in soak.tally.unary_ms[skip:] if w]
    chosen = windows[:per_minute] if first else windows[-per_minute:]
    values = [v for w in chosen for v in w]
    return percentile(values, 0.5), percentile(values, 0.99)


def section_lines(soak: Soak) -> list[str]:
    steady, t = soak.steady, soak.tally
    if not steady:
        return ["## Soak", "", "Not enough samples after the warm-up to fit a slope.", ""]
    first, last = steady[0], steady[-1]
    minutes = (last.seconds - first.seconds) / 60
    cpu = (last.cpu_seconds - first.cpu_seconds) / max(1e-9, last.seconds - first.seconds)
    rate = (last.calls - first.calls) / max(1e-9, last.seconds - first.seconds)
    errors = ", ".join(f"{k} {v}" for k, v in sorted(t.errors.items())) or "none"
    statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(t.statuses.items()))
    calls = ", ".join(f"{k} {t.calls[k]:,}" for k in MIX)
    verdict = "**flat**" if soak.flat else "**NOT flat**"
    lat_first, lat_last = window_latency(soak, True), window_latency(soak, False)
    after = soak.after
    lines = [
        "## Soak",
        "",
        f"Written by `{('python -m bench.soak ' + soak.meta.get('args', '')).strip()}` "
        f"on {soak.meta['date']}, commit `{soak.meta['commit']}`: one gateway process "
        f"(`--workers 1`, auth and limiter on, metrics on, everything else off), simulator "
        f"with {SIM_LATENCY_MS:g} ms to first byte and {SIM_TOKENS_PER_SECOND:g} tokens/s; "
        f"{soak.rate:g} calls/s for {soak.duration / 60:.3g} min (open loop), "
        f"{', '.join(f'{v:.0%} {k}' for k, v in MIX.items())} (cut after "
        f"{CANCEL_AFTER_CHUNKS} chunks of 20). RSS and fds sampled every "
        f"{SAMPLE_SECONDS:g} s; slopes fitted by least squares over the "
        f"{len(steady)} samples after the first {soak.warmup / 60:.3g} min of warm-up.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| calls by kind | {calls} (skipped at the in-flight bound: {t.skipped}) |",
        f"| achieved rate after warm-up | {rate:.1f} calls/s |",
        f"| final statuses | {statuses} |",
        f"| errors | {errors} |",
        f"| gateway RSS after warm-up → end | {first.rss / MIB:.1f} → {last.rss / MIB:.1f} MiB "
        f"(at start {soak.samples[0].rss / MIB:.1f} MiB) |",
        f"| **RSS slope** | **{soak.rss_slope:+.3f} MiB/min** "
        f"(limit ±{RSS_FLAT_MIB_PER_MINUTE:g}) |",
        f"| gateway fds after warm-up → end | {first.fds} → {last.fds} "
        f"(at start {soak.samples[0].fds}) |",
        f"| **fd slope** | **{soak.fds_slope:+.3f} /min** (limit ±{FDS_FLAT_PER_MINUTE:g}) |",
        f"| 10 s after the load stopped | RSS {after.rss / MIB:.1f} MiB, fds {after.fds} |"
        if after
        else "| 10 s after the load stopped | not sampled |",
        f"| gateway CPU after warm-up | {cpu:.0%} of one core |",
        f"| unary p50 / p99, first → last minute | {lat_first[0]:.2f} / {lat_first[1]:.2f} → "
        f"{lat_last[0]:.2f} / {lat_last[1]:.2f} ms |",
        f"| verdict | {verdict} over {minutes:.1f} min |",
        "",
        "Plot: `soak.png`.",
        "",
    ]
    return lines


def plot(soak: Soak, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.seconds / 60 for s in soak.samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    top.plot(minutes, [s.rss / MIB for s in soak.samples], marker=".", color="tab:blue")
    top.set_ylabel("gateway RSS, MiB")
    top.set_title(
        f"Soak: {soak.rate:g} calls/s for {soak.duration / 60:.3g} min — RSS "
        f"{soak.rss_slope:+.2f} MiB/min, fds {soak.fds_slope:+.2f}/min"
    )
    bottom.plot(minutes, [s.fds for s in soak.samples], marker=".", color="tab:orange")
    bottom.set_ylabel("open fds")
    bottom.set_xlabel("minutes since the load started")
    for ax in (top, bottom):
        ax.axvspan(0, soak.warmup / 60, color="0.9", label="warm-up (not fitted)")
        ax.grid(alpha=0.3)
    top.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def finish(soak: Soak, output: Path) -> None:
    steady = soak.steady
    soak.rss_slope = slope_per_minute([(s.seconds, s.rss / MIB) for s in steady])
    soak.fds_slope = slope_per_minute([(s.seconds, float(s.fds)) for s in steady])
    raw = {
        "samples": [vars(s) for s in soak.samples],
        "after": vars(soak.after) if soak.after else None,
    }
    (BENCH_DIR / ".work" / "soak.json").write_bytes(orjson.dumps(raw))
    report.replace_section(output, report.SOAK_HEADING, section_lines(soak))
    plot(soak, output.parent / "soak.png")
    print(
        f"\nRSS slope {soak.rss_slope:+.3f} MiB/min, fd slope {soak.fds_slope:+.3f} /min, "
        f"errors {soak.tally.errors.total()}, calls {dict(soak.tally.calls)}: "
        f"{'flat' if soak.flat else 'NOT flat'}\nwrote the Soak section of {output} and soak.png"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument(
        "--warmup", type=float, default=WARMUP_SECONDS, help="seconds not fitted (default 60)"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="calls started per second")
    parser.add_argument(
        "--output", type=Path, default=BENCH_DIR / "RESULTS.md", help="the report to update"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    procs.install_teardown()
    procs.raise_fd_limit()
    workdir = BENCH_DIR / ".work"
    workdir.mkdir(exist_ok=True)
    soak = Soak(rate=args.rate, duration=args.duration, warmup=args.warmup)
    soak.meta = {
        "date": utc_now(),
        "commit": git_head(procs.REPO),
        "args": " ".join(sys.argv[1:] if argv is None else argv),
    }
    with stack.simulator(
        workdir, latency_ms=SIM_LATENCY_MS, tokens_per_second=SIM_TOKENS_PER_SECOND
    ) as sim:
        tree = stack.gateway_tree(sim.http, metrics=True)
        with stack.gateway(workdir, tree, name="gateway-soak", workers=1) as gw:
            print(f"soak: {args.rate:g} calls/s for {args.duration:g} s, gateway pid {gw.pid}")
            try:
                import uvloop
            except ImportError:
                asyncio.run(run_soak(gw, soak))
            else:
                uvloop.run(run_soak(gw, soak))
    finish(soak, args.output)
    return 0 if soak.flat and not soak.tally.errors else 1


if __name__ == "__main__":
    sys.exit(main())
