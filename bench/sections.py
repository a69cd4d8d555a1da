"""The measurements, one function per section of the issue; each fills `Results`.

Every load is bounded (warm-up + duration, and a hard timeout around each child) and
targets 127.0.0.1 only. Within one measurement both sides run the same prompt for the
same duration, one after the other, against the same simulator process.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from bench import h2load, procs, report, stack
from bench.direct import http_unary_load
from bench.grpc_check import sample_statuses
from bench.h2load import Load, LoadResult
from bench.procs import PYTHON, read_line, rss_bytes, run_bounded, spawn_piped, stop
from bench.results import TTFT_STAGGER_MS, WORKER_ROWS, HoldRun, Results, StreamRun, Target

#: h2load shape for saturation: gRPC 4 connections x 16 streams; HTTP/1.1 64 connections.
GRPC_CLIENTS, GRPC_STREAMS, H1_CONCURRENCY = 4, 16, 64
#: Section 1 measures echo, forwarder and gateway this many times in turn, keeping the best.
SATURATION_ROUNDS = 2
#: 1 vs 2 workers: the same 64 calls in flight over 16 connections, so that SO_REUSEPORT
#: (which places whole connections) can spread them evenly over the workers.
WORKER_CLIENTS, WORKER_STREAMS = 16, 4
#: Section 2's moderate load is this share of the gateway's peak RPS from section 1 ...
MODERATE_SHARE = 0.25
#: ... or this rate (requests per second) when section 1 did not run.
MODERATE_RATE = 500.0
REALISTIC_LATENCY_MS = 20.0
#: Held streams: a token every 5 s for 100 tokens outlives the hold, and 10,000 streams
#: then relay only 2,000 tokens/s (at 1 token/s the relaying itself saturated the gateway
#: and slowed the ramp). Not longer answers: the simulator builds every event of an answer
#: up front (~20 ms CPU and ~2 MB for 10,000 tokens).
#: The HTTP-client rows of section 4 run this share of the duration.
CLIENT_DURATION_SHARE = 0.5
#: Requests per HTTP client in the seam-alone runs (others: 20,000).
SEAM_REQUESTS = {"httpx2": 3_000, "httpx": 1_000}
HOLD_PROMPT = "/tokens 100 slow"
HOLD_TOKENS_PER_SECOND = 0.2


@dataclass
class Ctx:
    workdir: Path
    duration: float
    warmup: float
    quick: bool
    results: Results
    #: The report: sections written apart (CPU per call) go there directly.
    output: Path = Path("bench/RESULTS.md")


def measure_grpc(
    ctx: Ctx,
    label: str,
    load: Load,
    endpoint: stack.Endpoint,
    sim: stack.Endpoint | None,
    api_key: str | None = stack.BENCH_KEY,
) -> LoadResult:
    """h2load on a gRPC endpoint while the real client samples grpc-status beside it."""
    before = stack.upstream_requests(sim) if sim else 0
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(h2load.run, label, load, ctx.workdir)
        sample = asyncio.run(
            sample_statuses(endpoint.address, api_key, seconds=load.warmup + load.duration - 0.5)
        )
        result = running.result()
    result.grpc_sample = sample
    if sim:
        result.upstream_seen = stack.upstream_requests(sim) - before - sum(sample.values())
    _say(result)
    return result


def measure_http(ctx: Ctx, label: str, load: Load) -> LoadResult:
    result = h2load.run(label, load, ctx.workdir)
    _say(result)
    return result


def _say(result: LoadResult) -> None:
    lat = result.latency
    extra = f" sample={result.grpc_sample}" if result.grpc_sample else ""
    print(
        f"  {result.label:<28} {result.rps:>9.0f} req/s  p50 {lat.p50_ms:7.3f} ms  "
        f"p99 {lat.p99_ms:7.3f} ms  failed {result.failed + result.errored + result.non_2xx}"
        f"{extra}{'  ERROR ' + result.error if result.error else ''}",
        flush=True,
    )


def _grpc_saturation(
    ctx: Ctx,
    label: str,
    gw: stack.Endpoint,
    sim: stack.Endpoint | None,
    auth: bool = True,
    shape: tuple[int, int] = (GRPC_CLIENTS, GRPC_STREAMS),
) -> LoadResult:
    load = stack.grpc_unary_load(
        gw,
        ctx.workdir,
        clients=shape[0],
        streams=shape[1],
        duration=ctx.duration,
        warmup=ctx.warmup,
        auth=auth,
    )
    return measure_grpc(ctx, label, load, gw, sim, stack.BENCH_KEY if auth else None)


def _direct_saturation(ctx: Ctx, label: str, sim: stack.Endpoint) -> LoadResult:
    load = http_unary_load(
        sim, ctx.workdir, concurrency=H1_CONCURRENCY, duration=ctx.duration, warmup=ctx.warmup
    )
    return measure_http(ctx, label, load)


def throughput(ctx: Ctx) -> None:
    """1. Unary RPS at saturation: simulator direct, bare echo server, bare forwarder,
    gateway."""
    print("[1] unary throughput at saturation", flush=True)
    res = ctx.results.unary
    with (
        stack.simulator(ctx.workdir) as sim,
        stack.echo_server(ctx.workdir) as echo,
        stack.forwarder(ctx.workdir, sim) as forwarder,
        stack.gateway(ctx.workdir, stack.gateway_tree(sim.http)) as gw,
    ):
        res["direct"] = _direct_saturation(ctx, "direct (HTTP/1.1)", sim)
        # The ratios compare runs that this shared machine disturbs unevenly (±10% run
        # to run): each side runs in turn, twice, and keeps its better run.
        runs: dict[str, list[LoadResult]] = {"echo": [], "forwarder": [], "gateway": []}
        for _ in range(1 if ctx.quick else SATURATION_ROUNDS):
            runs["echo"].append(_grpc_saturation(ctx, "bare grpc.aio echo", echo, None))
            label = "bare forwarder"
            runs["forwarder"].append(_grpc_saturation(ctx, label, forwarder, sim, auth=False))
            runs["gateway"].append(_grpc_saturation(ctx, "gateway", gw, sim))
        for name, results in runs.items():
            res[name] = max(results, key=lambda run: run.rps if run.ok else -1.0)
        _workers(ctx, sim)


def _workers(ctx: Ctx, sim: stack.Endpoint) -> None:
    """The same gateway with 1 and with 2 worker processes, 16 connections each time."""
    shape = (WORKER_CLIENTS, WORKER_STREAMS)
    for workers in WORKER_ROWS:
        label = WORKER_ROWS[workers]
        tree = stack.gateway_tree(sim.http)
        with stack.gateway(ctx.workdir, tree, name=f"gateway-w{workers}", workers=workers) as gw:
            pids = procs.children(gw.pid) if workers > 1 else [gw.pid]
            before = [procs.cpu_seconds(pid) for pid in pids]
            ctx.results.unary[label] = _grpc_saturation(ctx, label, gw, sim, shape=shape)
            used = [procs.cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        ctx.results.worker_cpu[workers] = used
        print(f"    CPU seconds per worker process: {[round(u, 1) for u in used]}", flush=True)


def latency(ctx: Ctx) -> None:
    """2. Added latency at concurrency 1 (zero-latency upstream) and at a fixed moderate rate."""
    print("[2] added latency", flush=True)
    res = ctx.results.latency
    d, w = ctx.duration, ctx.warmup
    with (
        stack.simulator(ctx.workdir) as sim,
        stack.gateway(ctx.workdir, stack.gateway_tree(sim.http)) as gw,
    ):
        res["direct c=1"] = measure_http(
            ctx,
            "direct c=1",
            http_unary_load(sim, ctx.workdir, concurrency=1, duration=d, warmup=w),
        )
        load = stack.grpc_unary_load(gw, ctx.workdir, clients=1, streams=1, duration=d, warmup=w)
        res["gateway c=1"] = measure_grpc(ctx, "gateway c=1", load, gw, sim)
        # The floors at c=1: grpc.aio alone, and grpc.aio forwarding with no pipeline.
        with stack.echo_server(ctx.workdir) as echo:
            load = stack.grpc_unary_load(
                echo, ctx.workdir, clients=1, streams=1, duration=d, warmup=w, auth=False
            )
            res["echo c=1"] = measure_grpc(ctx, "echo c=1", load, echo, None, None)
        with stack.forwarder(ctx.workdir, sim) as forwarder:
            load = stack.grpc_unary_load(
                forwarder, ctx.workdir, clients=1, streams=1, duration=d, warmup=w, auth=False
            )
            res["forwarder c=1"] = measure_grpc(ctx, "forwarder c=1", load, forwarder, sim, None)
    peak = ctx.results.unary.get("gateway")
    rate = round(peak.rps * MODERATE_SHARE, -1) if peak and peak.ok else MODERATE_RATE
    ctx.results.moderate_rate = rate
    with (
        stack.simulator(ctx.workdir, latency_ms=REALISTIC_LATENCY_MS) as sim,
        stack.gateway(ctx.workdir, stack.gateway_tree(sim.http)) as gw,
    ):
        key = f"@{rate:.0f}/s"
        load = http_unary_load(sim, ctx.workdir, concurrency=32, duration=d, warmup=w, rate=rate)
        res[f"direct {key}"] = measure_http(ctx, f"direct {key}", load)
        load = stack.grpc_unary_load(
            gw, ctx.workdir, clients=4, streams=16, duration=d, warmup=w, rate=rate
        )
        res[f"gateway {key}"] = measure_grpc(ctx, f"gateway {key}", load, gw, sim)


def _stream_run(ctx: Ctx, label: str, argv: list[str]) -> StreamRun:
    proc = run_bounded(
        [PYTHON, "-m", "bench.streaming", *argv],
        timeout=ctx.warmup + ctx.duration + 60,
        log=ctx.workdir / f"stream-{label.replace(' ', '-')}.log",
    )
    run = StreamRun(label)
    try:
        run.data = orjson.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, orjson.JSONDecodeError):
        run.error = f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    print(
        f"  {label:<28} ttft p50 {run.ttft('p50'):7.2f} ms  p99 {run.ttft('p99'):7.2f} ms  "
        f"{run.tokens_per_second:>9.0f} tok/s  failures {run.failures} {run.error}",
        flush=True,
    )
    return run


def _hold(ctx: Ctx, streams: int) -> HoldRun:
    """Open `streams` slow streams through a fresh gateway and read its RSS while held."""
    hold = HoldRun(streams)
    with stack.simulator(ctx.workdir, tokens_per_second=HOLD_TOKENS_PER_SECOND) as sim:
        room = streams + 1000
        tree = stack.gateway_tree(sim.http, max_connections=room, max_in_flight=room)
        with stack.gateway(ctx.workdir, tree, name=f"gateway-hold-{streams}") as gw:
            time.sleep(0.5)
            hold.rss_idle = rss_bytes(gw.pid)
            timeout = 60.0 + streams / 100
            argv = [PYTHON, "-m", "bench.streaming", "grpc", gw.address, "--mode", "hold"]
            argv += ["--streams", str(streams), "--prompt", HOLD_PROMPT]
            argv += ["--hold-timeout", f"{timeout:g}"]
            driver = spawn_piped(argv, log=ctx.workdir / f"hold-{streams}.log")
            try:
                line = read_line(driver, timeout + 10)
                report: dict[str, Any] = orjson.loads(line) if line else {}
                hold.held = int(report.get("held", 0))
                hold.failures = report.get("failures", {})
                hold.open_seconds = float(report.get("open_seconds", 0.0))
                samples = []
                for _ in range(5):
                    samples.append(rss_bytes(gw.pid))
                    time.sleep(0.3)
                hold.rss_held = max(samples)
                if not line:
                    hold.error = "the driver reported nothing"
            finally:
                if driver.stdin:
                    driver.stdin.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    driver.wait(30)
                stop(driver)
    print(
        f"  hold {streams:>6} streams: held {hold.held}, gateway RSS idle "
        f"{hold.rss_idle / 2**20:.0f} MiB, held {hold.rss_held / 2**20:.0f} MiB, "
        f"opened in {hold.open_seconds:.1f}s, failures {hold.failures} {hold.error}",
        flush=True,
    )
    return hold


def streaming(ctx: Ctx) -> None:
    """3. Streaming: added TTFT, relayed tokens/s vs direct, RSS holding many slow streams."""
    print("[3] streaming", flush=True)
    res = ctx.results
    common = ["--duration", f"{ctx.duration:g}", "--warmup", f"{ctx.warmup:g}"]
    # TTFT on a realistic upstream: 20 ms to first byte, 100 tokens/s, 20-token answers.
    with (
        stack.simulator(ctx.workdir, latency_ms=REALISTIC_LATENCY_MS, tokens_per_second=100) as sim,
        stack.gateway(ctx.workdir, stack.gateway_tree(sim.http)) as gw,
        stack.forwarder(ctx.workdir, sim) as forwarder,
    ):
        # Streams start at random phases of the simulator's millisecond timer (see
        # bench.streaming): otherwise each side locks onto its own phase.
        ttft_args = [*common, "--concurrency", "16", "--prompt", "/tokens 20 ttft"]
        ttft_args += ["--stagger-ms", f"{TTFT_STAGGER_MS:g}"]
        res.ttft["direct"] = _stream_run(ctx, "ttft direct", ["http", sim.http, *ttft_args])
        res.ttft["gateway"] = _stream_run(ctx, "ttft gateway", ["grpc", gw.address, *ttft_args])
        # What grpc.aio on both ends and the adapter add with no pipeline: the floor.
        forwarded = ["grpc", forwarder.address, *ttft_args, "--no-auth"]
        res.ttft["forwarder"] = _stream_run(ctx, "ttft forwarder", forwarded)
    # Relay throughput: unpaced upstream, 100-token answers, 32 streams at once.
    with (
        stack.simulator(ctx.workdir) as sim,
        stack.gateway(ctx.workdir, stack.gateway_tree(sim.http)) as gw,
        stack.forwarder(ctx.workdir, sim) as forwarder,
    ):
        relay_args = [*common, "--concurrency", "32", "--prompt", "/tokens 100 relay"]
        res.relay["direct"] = _stream_run(ctx, "relay direct", ["http", sim.http, *relay_args])
        res.relay["gateway"] = _stream_run(ctx, "relay gateway", ["grpc", gw.address, *relay_args])
        forwarded = ["grpc", forwarder.address, *relay_args, "--no-auth"]
        res.relay["forwarder"] = _stream_run(ctx, "relay forwarder", forwarded)
    for streams in (1_000,) if ctx.quick else (1_000, 10_000):
        res.holds.append(_hold(ctx, streams))


@dataclass(frozen=True)
class Switches:
    """Which hot-path features one row of the matrix turns on; everything else is off."""

    auth: bool = False
    rate_limit: bool = False
    metrics: bool = False
    #: Who makes server spans when tracing is on: "gateway" or "opentelemetry-grpc".
    tracing: str | None = None
    redaction: bool = False
    audit: bool = False
    cache: bool = False


BASE_FEATURES = "auth off, limiter off"
FEATURES = {
    BASE_FEATURES: Switches(),
    "auth on, limiter off": Switches(auth=True),
    "auth off, limiter on": Switches(rate_limit=True),
    "auth on, limiter on": Switches(auth=True, rate_limit=True),
    "metrics on": Switches(metrics=True),
    "tracing (0% sampled)": Switches(tracing="gateway"),
    "tracing, OTel grpc instrumentation (0% sampled)": Switches(tracing="opentelemetry-grpc"),
    "redaction (redact, built-in detectors)": Switches(redaction=True),
    "audit log on": Switches(audit=True),
    "cache on (request not cacheable)": Switches(cache=True),
}
#: The first is the gateway's default, measured in every other section too.
HTTP_CLIENTS = ("h1", "aiohttp", "httpx2", "httpx")


def _feature_tree(ctx: Ctx, sim: stack.Endpoint, on: Switches) -> dict[str, Any]:
    audit = ctx.workdir / "audit.jsonl" if on.audit else None
    if audit:
        audit.unlink(missing_ok=True)
    return stack.gateway_tree(
        sim.http,
        auth=on.auth,
        rate_limit=on.rate_limit,
        metrics=on.metrics,
        tracing=on.tracing,
        redaction=on.redaction,
        audit=audit,
        cache=on.cache,
    )


def features(ctx: Ctx) -> None:
    """4. Cost of each hot-path feature, one at a time over the all-off base, and of the
    HTTP client choice."""
    print("[4] hot-path features and HTTP clients", flush=True)
    with stack.simulator(ctx.workdir) as sim:
        for label, on in FEATURES.items():
            with stack.gateway(ctx.workdir, _feature_tree(ctx, sim, on)) as gw:
                ctx.results.features[label] = _grpc_saturation(ctx, label, gw, sim, auth=on.auth)
        for client in HTTP_CLIENTS:
            if client == HTTP_CLIENTS[0] and "auth on, limiter on" in ctx.results.features:
                ctx.results.clients[client] = ctx.results.features["auth on, limiter on"]
                continue
            tree = stack.gateway_tree(sim.http, http_client=client)
            # The clients differ 2-5x, far beyond run-to-run noise: half the time tells
            # (in whole seconds, which is what h2load takes).
            brief = replace(ctx, duration=max(1, round(ctx.duration * CLIENT_DURATION_SHARE)))
            with stack.gateway(ctx.workdir, tree, name=f"gateway-{client}") as gw:
                ctx.results.clients[client] = _grpc_saturation(brief, f"client {client}", gw, sim)
        for client in HTTP_CLIENTS:
            ctx.results.client_cpu[client] = _http_seam(ctx, sim, client)


def _http_seam(ctx: Ctx, sim: stack.Endpoint, client: str) -> dict[str, float]:
    """One HTTP client alone against the simulator: RPS and CPU µs per request."""
    # The slow clients take ~0.7 and ~7 ms of CPU each: fewer requests give the same figure.
    requests = 5_000 if ctx.quick else SEAM_REQUESTS.get(client, 20_000)
    argv = [PYTHON, "-m", "bench.http_seam", "--url", sim.http, "--client", client]
    done = run_bounded([*argv, "--requests", str(requests)], 180, log=ctx.workdir / "seam.log")
    lines = done.stdout.strip().splitlines()
    result: dict[str, float] = orjson.loads(lines[-1]) if done.returncode == 0 and lines else {}
    print(f"  seam {client:<8} {result or done.stderr[-300:]}", flush=True)
    return result


def run_section(name: str, ctx: Ctx) -> None:
    started = time.monotonic()
    SECTIONS[name](ctx)
    ctx.results.sections_run.append(name)
    print(f"    ({name}: {time.monotonic() - started:.0f}s)", flush=True)


def cpu_per_call(ctx: Ctx) -> None:
    """0. CPU µs per call of each server process, interleaved rounds (bench.cpu): the
    steady measure, written as its own section of the report."""
    from bench import cpu

    print("[0] CPU per call", flush=True)
    calls, rounds = (1_000, 2) if ctx.quick else (4_000, 5)
    results = cpu.run(ctx.workdir, calls, rounds)
    _write_section(ctx, cpu.HEADING, cpu.section(results, calls, rounds), cpu.checks(results))


def overload(ctx: Ctx) -> None:
    """6. Above saturation (bench.overload): what the calls not served get, and recovery."""
    from bench import overload as above_saturation

    print("[6] overload", flush=True)
    seconds = 3.0 if ctx.quick else 8.0
    lines, targets = above_saturation.run(ctx.workdir, seconds, factor=2.0)
    _write_section(ctx, report.OVERLOAD_HEADING, lines, targets)


def _write_section(ctx: Ctx, heading: str, lines: list[str], targets: list[Target]) -> None:
    """A section written apart from the summary's tables; its targets join the summary."""
    report.replace_section(ctx.output, heading, lines)
    ctx.results.section_targets += targets
    for target in targets:
        print(f"  {target.line()}", flush=True)


SECTIONS = {
    "cpu": cpu_per_call,
    "throughput": throughput,
    "latency": latency,
    "streaming": streaming,
    "features": features,
    "overload": overload,
}


def peers(ctx: Ctx) -> None:
    """5. LiteLLM proxy vs the gateway vs direct, same simulator, same prompt."""
    from bench import litellm_peer

    print("[5] peers: LiteLLM", flush=True)
    res = ctx.results
    why = litellm_peer.ensure_installed(ctx.workdir / "litellm-install.log")
    if why:
        res.peers_note = why
        print(f"  {why}", flush=True)
        return
    d, w = ctx.duration, ctx.warmup
    with stack.simulator(ctx.workdir) as sim:
        try:
            with litellm_peer.proxy(ctx.workdir, sim) as (lite, key):
                url = f"{lite.http}/v1/chat/completions"
                auth = (f"authorization: Bearer {key}",)
                for label, conc in (("litellm", 16), ("litellm c=1", 1)):
                    load = http_unary_load(
                        sim,
                        ctx.workdir,
                        concurrency=conc,
                        duration=d,
                        warmup=w,
                        url=url,
                        headers=auth,
                        model=stack.MODEL,
                    )
                    res.peers[label] = measure_http(ctx, label, load)
        except (RuntimeError, TimeoutError) as error:
            res.peers_note = f"LiteLLM not measured: it did not start ({error}); see litellm.log"
            print(f"  {res.peers_note}", flush=True)
            return
        res.peers["direct"] = _direct_saturation(ctx, "direct", sim)
        res.peers["direct c=1"] = measure_http(
            ctx,
            "direct c=1",
            http_unary_load(sim, ctx.workdir, concurrency=1, duration=d, warmup=w),
        )
        with stack.gateway(ctx.workdir, stack.gateway_tree(sim.http)) as gw:
            res.peers["gateway"] = _grpc_saturation(ctx, "gateway", gw, sim)
            load = stack.grpc_unary_load(
                gw, ctx.workdir, clients=1, streams=1, duration=d, warmup=w
            )
            res.peers["gateway c=1"] = measure_grpc(ctx, "gateway c=1", load, gw, sim)


SECTIONS["peers"] = peers
