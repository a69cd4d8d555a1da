"""`python -m bench.dashboard_preview` / `make dashboard-preview`: a picture of the
Grafana dashboard's main panels, drawn from the dashboard's own queries.

Runs the simulator in this process, a gateway process (the kit's traffic config, no
Redis), Prometheus from the kit's prometheus.yml scraping it every second, and two
minutes of
traffic in three phases: steady; an upstream answering 30% of its calls with 503 and
slower (retries, fallbacks, upstream errors, longer calls); steady again. All along,
the kit's mix of refused and failing calls runs every few seconds. Then each chosen
panel's queries go through Prometheus's range API (`$model`, `$key` = All) and
matplotlib draws them, one subplot per panel, into docs/images/dashboard-preview.png.
Needs `prometheus` on PATH and matplotlib (`make bench` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from ai_service.simulator import FaultRule, Simulator, SimulatorConfig
from ai_service_client import AIServiceError, AsyncAIClient
from bench import kit, kit_traffic, procs
from bench import prometheus as prom

OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "dashboard-preview.png"
#: The dashboard's panels drawn, in reading order (three to a row).
PANELS = (
    "Calls by gRPC code",
    "Server-side failure ratio by model",
    "Errors by key and code",
    "Call duration (OK calls)",
    "Gateway overhead",
    "Time to first token",
    "Tokens per second by kind",
    "Retries, hedges and fallbacks",
    "Upstream errors by provider",
    "Circuit state by deployment",
    "Limiter refusals by key",
    "Cache hit ratio by model",
)
#: Every variable at its "All" value; rates over 10 s of 1 s scrapes.
VARIABLES = {"model": ".*", "key": ".*", "__rate_interval": "10s"}
STEP_SECONDS = 2.0
CALLS_PER_SECOND = 20.0
MIX_EVERY_SECONDS = 4.0
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
#: Grafana's units as (scale, axis label).
_UNITS = {
    "s": (1000.0, "ms"),
    "percentunit": (100.0, "%"),
    "reqps": (1.0, "calls/s"),
    "ops": (1.0, "per second"),
    "short": (1.0, ""),
}


async def steady_load(address: str, until: float) -> None:
    """Answered calls on the served models: a third streamed, a fifth a cache hit."""
    async with AsyncAIClient(address, kit_traffic.TESTER_KEY, timeout=10) as client:
        tasks: set[asyncio.Task[None]] = set()
        number = 0
        while time.monotonic() < until:
            number += 1
            model = kit_traffic.MODEL if number % 4 else kit_traffic.FALLBACK
            prompt = kit_traffic.CACHED_PROMPT if number % 5 == 0 else None
            request = kit_traffic.ask(model, prompt)
            call = _drain(client.stream_chat(request)) if number % 3 == 0 else client.chat(request)
            task = asyncio.create_task(_quietly(call))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(1 / CALLS_PER_SECOND)
        await asyncio.gather(*tasks)


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def _quietly(call: Any) -> None:
    with contextlib.suppress(AIServiceError):
        await call


async def mixes(address: str, simulator: Simulator, until: float) -> None:
    while time.monotonic() < until:
        await kit_traffic.one_round(address, simulator)
        await asyncio.sleep(MIX_EVERY_SECONDS)


async def trouble(simulator: Simulator, start: float, end: float) -> None:
    """The middle phase: sim-gpt's upstream fails 30% of its calls and slows down."""
    await asyncio.sleep(start - time.monotonic())
    simulator.add_fault(FaultRule("status", model="sim-gpt-1", status=503, probability=0.3))
    simulator.config.latency_ms *= 3
    await asyncio.sleep(end - time.monotonic())
    simulator.clear_faults()
    kit_traffic.break_upstream(simulator)
    simulator.config.latency_ms /= 3


Ranges = dict[str, list[dict[str, Any]]]


@contextlib.contextmanager
def gateway_process(workdir: Path, tree: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The gateway in a process of its own (its overhead is then its own, not shared
    with this process's simulator and callers); yields its gRPC and metrics addresses."""
    grpc_address = f"{procs.LOOPBACK}:{procs.free_port()}"
    metrics_address = f"{procs.LOOPBACK}:{procs.free_port()}"
    config = workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump(tree), encoding="utf-8")
    argv = [procs.PYTHON, "-m", "server", "--config", str(config), "--workers", "1"]
    argv += ["--listen", grpc_address, "--metrics-listen", metrics_address]
    port = int(grpc_address.rsplit(":", 1)[1])
    with procs.running(argv, port=port, log=workdir / "gateway.log"):
        yield grpc_address, metrics_address


async def record(binary: str, seconds: float, workdir: Path) -> tuple[float, Ranges]:
    """Run the traffic; when it began, and each chosen panel's series keyed by title."""
    async with Simulator(SimulatorConfig(latency_ms=20, tokens_per_second=200)) as simulator:
        kit_traffic.break_upstream(simulator)
        tree = kit_traffic.gateway_tree(simulator.base_url)
        with gateway_process(workdir, tree) as (address, metrics):
            config = prom.scrape_config(metrics)
            async with prom.running(binary, workdir / "prometheus", config) as prometheus:
                await prometheus.wait_for(f'up{{job="{prom.JOB}"}} == 1', "the gateway scraped")
                began = time.time()
                now = time.monotonic()
                until = now + seconds
                print(f"driving traffic for {seconds:.0f} s ...", flush=True)
                await asyncio.gather(
                    steady_load(address, until),
                    mixes(address, simulator, until),
                    trouble(simulator, now + seconds / 3, now + 2 * seconds / 3),
                )
                await prometheus.scraped_after(time.time())
                return began, await _panel_ranges(prometheus, began, time.time())


async def _panel_ranges(prometheus: prom.Prometheus, start: float, end: float) -> Ranges:
    by_title = {panel["title"]: panel for panel in kit.panels()}
    ranges: Ranges = {}
    for title in PANELS:
        panel = by_title[title]
        drawn = ranges[title] = []
        for target in panel["targets"]:
            expr = kit.substitute(target["expr"], VARIABLES)
            for series in await prometheus.query_range(expr, start, end, STEP_SECONDS):
                legend = _legend(target["legendFormat"], series["metric"])
                drawn.append({"legend": legend, "values": series["values"]})
        drawn.sort(key=lambda s: str(s["legend"]))
    return ranges


def _legend(legend_format: str, labels: dict[str, str]) -> str:
    """Grafana's `{{label}}` legend for one series."""
    return _LEGEND.sub(lambda m: labels.get(m[1], ""), legend_format).strip()


def draw(ranges: Ranges, start: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {panel["title"]: panel for panel in kit.panels()}
    columns = 3
    rows = -(-len(PANELS) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(16, 3.6 * rows), sharex=True)
    for ax, title in zip(axes.flat, PANELS, strict=False):
        timeline = panels[title]["type"] == "state-timeline"
        scale, label = _UNITS[panels[title]["fieldConfig"]["defaults"].get("unit", "short")]
        for series in ranges[title]:
            xs = [float(t) - start for t, _ in series["values"]]
            ys = [float(v) * scale for _, v in series["values"]]
            ax.plot(xs, ys, linewidth=1.2, label=series["legend"] or title)
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if timeline:  # the circuit state: 0 closed, 1 half-open, 2 open
            ax.set_yticks([0, 1, 2], ["closed", "half-open", "open"])
        if ranges[title]:
            ax.legend(fontsize=7, loc="best", ncol=2, framealpha=0.8)
        ax.set_ylim(bottom=0)
        if label == "%":
            ax.set_ylim(top=105)
    for ax in axes[-1]:
        ax.set_xlabel("seconds", fontsize=9)
    fig.suptitle(
        "ai-service gateway dashboard (deploy/observability/grafana-dashboard.json), main panels; "
        "upstream trouble in the middle third",
        fontsize=12,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="traffic duration")
    parser.add_argument("--out", type=Path, default=OUT, help="the PNG to write")
    args = parser.parse_args(argv)
    binary = shutil.which("prometheus")
    if binary is None:
        print("prometheus is not installed: apt-get install prometheus", file=sys.stderr)
        return 2
    procs.install_teardown()
    with tempfile.TemporaryDirectory(prefix="dashboard-preview-") as workdir:
        began, ranges = asyncio.run(record(binary, args.seconds, Path(workdir)))
    empty = [title for title, series in ranges.items() if not series]
    draw(ranges, began, args.out)
    print(f"wrote {args.out}")
    if empty:
        print(f"panels without series: {', '.join(empty)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
