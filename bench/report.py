"""RESULTS.md (tables, ratios, targets with PASS/FAIL) and the PNG plots beside it."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from bench.h2load import LoadResult
from bench.results import TTFT_STAGGER_MS, WORKER_ROWS, Results, Target

MIB = 2**20
GIB = 2**30
CPU_HEADING = "## CPU per call"
SOAK_HEADING = "## Soak"
GRPC_CORE_HEADING = "## gRPC core options"
OVERLOAD_HEADING = "## Overload"
HOTPATH_HEADING = "## Hot path, piece by piece"
CLIENT_CHOICE_HEADING = "## The default HTTP client"
MEDIA_HEADING = "## Content: a 1 MiB image"
REDACTION_STALL_HEADING = "## Redaction stall"
IDENTITY_HEADING = "## Caller identity"
COST_HEADING = "## Cost and budgets"
HTTP_DOOR_HEADING = "## The HTTP door"
#: Sections written by tools that run apart from `python -m bench` (bench.cpu, bench.soak,
#: bench.grpc_core, bench.overload, bench.hotpath, bench.media, bench.redaction_stall,
#: bench.identity, bench.ledger, bench.http_door), or by hand from their runs (the default
#: HTTP client, from bench.http_seam): a full run keeps them as they are.
KEPT_HEADINGS = (
    CPU_HEADING,
    HOTPATH_HEADING,
    OVERLOAD_HEADING,
    GRPC_CORE_HEADING,
    SOAK_HEADING,
    CLIENT_CHOICE_HEADING,
    MEDIA_HEADING,
    REDACTION_STALL_HEADING,
    IDENTITY_HEADING,
    COST_HEADING,
    HTTP_DOOR_HEADING,
)


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _get(d: dict[str, LoadResult], key: str, attr: Callable[[LoadResult], float]) -> float:
    return attr(d[key]) if key in d and d[key].ok else math.nan


def targets(r: Results) -> list[Target]:
    rps = lambda x: x.rps  # noqa: E731
    p50 = lambda x: x.latency.p50_ms  # noqa: E731
    p99 = lambda x: x.latency.p99_ms  # noqa: E731
    ten_k = [h for h in r.holds if h.streams == 10_000 and h.held]
    held_note = "" if ten_k else "10,000-stream hold not run (quick run or failed)"
    return [
        *r.section_targets,
        Target(
            "unary gateway RPS / bare grpc.aio echo RPS",
            _ratio(_get(r.unary, "gateway", rps), _get(r.unary, "echo", rps)) * 100,
            50,
            "%",
            True,
        ),
        Target(
            "unary RPS, 2 gateway workers / 1 worker",
            _ratio(_get(r.unary, WORKER_ROWS[2], rps), _get(r.unary, WORKER_ROWS[1], rps)),
            1.7,
            "x",
            True,
            "bounded here: h2load and the simulator share the same 2 cores",
        ),
        Target(
            "added latency at c=1, p50",
            _get(r.latency, "gateway c=1", p50) - _get(r.latency, "direct c=1", p50),
            0.5,
            "ms",
            False,
        ),
        Target(
            "added latency at c=1, p99",
            _get(r.latency, "gateway c=1", p99) - _get(r.latency, "direct c=1", p99),
            1.5,
            "ms",
            False,
        ),
        Target(
            f"added latency at {r.moderate_rate:.0f}/s (25% of peak), p99",
            _get(r.latency, f"gateway @{r.moderate_rate:.0f}/s", p99)
            - _get(r.latency, f"direct @{r.moderate_rate:.0f}/s", p99),
            5.0,
            "ms",
            False,
            "" if "gateway" in r.unary else "section 1 not run: a fixed rate, not 25% of peak",
        ),
        Target(
            "streaming added TTFT, p50",
            r.ttft["gateway"].ttft("p50") - r.ttft["direct"].ttft("p50")
            if "gateway" in r.ttft and "direct" in r.ttft
            else math.nan,
            1.0,
            "ms",
            False,
        ),
        Target(
            "relayed tokens/s vs direct",
            _ratio(r.relay["gateway"].tokens_per_second, r.relay["direct"].tokens_per_second) * 100
            if "gateway" in r.relay and "direct" in r.relay
            else math.nan,
            80,
            "%",
            True,
        ),
        Target(
            "unary RPS vs LiteLLM proxy (1 worker each)",
            _ratio(_get(r.peers, "gateway", rps), _get(r.peers, "litellm", rps)),
            20,
            "x",
            True,
            "" if r.peers else "run with --peers litellm",
        ),
        Target(
            "added latency at c=1 vs LiteLLM's, p50",
            _ratio(
                _get(r.peers, "gateway c=1", p50) - _get(r.peers, "direct c=1", p50),
                _get(r.peers, "litellm c=1", p50) - _get(r.peers, "direct c=1", p50),
            ),
            0.1,
            "x",
            False,
            "" if r.peers else "run with --peers litellm",
        ),
        Target(
            "gateway RSS holding 10,000 streams",
            ten_k[0].rss_held / GIB if ten_k else math.nan,
            0.5,
            "GiB",
            False,
            held_note,
        ),
    ]


def _f(value: float, fmt: str = ".0f") -> str:
    return "-" if math.isnan(value) else format(value, fmt)


def _failures(x: LoadResult) -> str:
    parts = [f"h2load failed {x.failed + x.errored + x.timeout}, non-2xx {x.non_2xx}"]
    if x.grpc_sample:
        parts.append("sample " + ", ".join(f"{k} {v}" for k, v in sorted(x.grpc_sample.items())))
    if x.upstream_seen is not None:
        missing = max(0, x.succeeded - x.upstream_seen)
        parts.append(f"upstream saw {x.upstream_seen} (unconfirmed {missing})")
    if x.error:
        parts.append(f"ERROR {x.error}")
    return "; ".join(parts)


def _rps_table(rows: dict[str, LoadResult], base: LoadResult | None, base_name: str) -> list[str]:
    out = [
        f"| configuration | RPS | vs {base_name} | p50 ms | p99 ms | failures / checks |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, x in rows.items():
        ratio = _ratio(x.rps, base.rps) * 100 if base and base.ok else math.nan
        out.append(
            f"| {name} | {_f(x.rps)} | {_f(ratio)}% | {_f(x.latency.p50_ms, '.2f')} | "
            f"{_f(x.latency.p99_ms, '.2f')} | {_failures(x)} |"
        )
    return out


def _latency_table(r: Results) -> list[str]:
    out = [
        "| load | side | p50 ms | p99 ms | p99.9 ms | requests | failures / checks |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for key, x in r.latency.items():
        side, load = key.split(" ", 1)
        lat = x.latency
        out.append(
            f"| {load} | {side} | {_f(lat.p50_ms, '.3f')} | {_f(lat.p99_ms, '.3f')} | "
            f"{_f(lat.p999_ms, '.3f')} | {lat.n} | {_failures(x)} |"
        )
    loads = sorted({k.split(" ", 1)[1] for k in r.latency}, key=lambda s: s != "c=1")
    for load in loads:
        d = r.latency.get(f"direct {load}")
        for side, label in (
            ("gateway", "**added (gateway - direct)**"),
            ("echo", "added by grpc.aio alone (echo - direct)"),
            ("forwarder", "added by the bare forwarder (forwarder - direct)"),
        ):
            measured = r.latency.get(f"{side} {load}")
            if measured is not None and d is not None:
                bold = "**" if side == "gateway" else ""
                cells = (
                    _f(measured.latency.p50_ms - d.latency.p50_ms, ".3f"),
                    _f(measured.latency.p99_ms - d.latency.p99_ms, ".3f"),
                    _f(measured.latency.p999_ms - d.latency.p999_ms, ".3f"),
                )
                row = " | ".join(f"{bold}{c}{bold}" for c in cells)
                out.append(f"| {load} | {label} | {row} | | |")
    return out


def _streaming_lines(r: Results) -> list[str]:
    out: list[str] = []
    if r.ttft or r.relay:
        out += [
            "| measurement | side | TTFT p50 ms | TTFT p99 ms | tokens/s | streams | failures |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for what, runs in (
            (
                "TTFT (20 ms, 100 tok/s upstream, c=16, each stream started after a random "
                f"0-{TTFT_STAGGER_MS:g} ms pause)",
                r.ttft,
            ),
            ("relay (unpaced upstream, 100 tokens, c=32)", r.relay),
        ):
            for side, run in runs.items():
                out.append(
                    f"| {what} | {side} | {_f(run.ttft('p50'), '.2f')} | "
                    f"{_f(run.ttft('p99'), '.2f')} | {_f(run.tokens_per_second)} | "
                    f"{run.data.get('streams', 0)} | {run.failures or 'none'} {run.error} |"
                )
        if "gateway" in r.ttft and "direct" in r.ttft:
            g, d = r.ttft["gateway"], r.ttft["direct"]
            out.append(
                f"| TTFT | **added** | **{_f(g.ttft('p50') - d.ttft('p50'), '.2f')}** | "
                f"**{_f(g.ttft('p99') - d.ttft('p99'), '.2f')}** | | | |"
            )
        if "forwarder" in r.ttft and "direct" in r.ttft:
            f, d = r.ttft["forwarder"], r.ttft["direct"]
            out.append(
                f"| TTFT | added by the bare forwarder (grpc.aio both ends, no pipeline) | "
                f"{_f(f.ttft('p50') - d.ttft('p50'), '.2f')} | "
                f"{_f(f.ttft('p99') - d.ttft('p99'), '.2f')} | | | |"
            )
        if "gateway" in r.relay and "direct" in r.relay:
            ratio = _ratio(
                r.relay["gateway"].tokens_per_second, r.relay["direct"].tokens_per_second
            )
            out.append(f"| relay | **gateway / direct** | | | **{_f(ratio * 100)}%** | | |")
        if "forwarder" in r.relay and "direct" in r.relay:
            ratio = _ratio(
                r.relay["forwarder"].tokens_per_second, r.relay["direct"].tokens_per_second
            )
            out.append(f"| relay | bare forwarder / direct | | | {_f(ratio * 100)}% | | |")
    if r.holds:
        out += [
            "",
            "| concurrent slow streams | held | gateway RSS idle | RSS holding | per stream | "
            "opened in | failures |",
            "|---:|---:|---:|---:|---:|---:|---|",
        ]
        for h in r.holds:
            per = (h.rss_held - h.rss_idle) / h.held / 1024 if h.held else math.nan
            out.append(
                f"| {h.streams:,} | {h.held:,} | {h.rss_idle / MIB:.0f} MiB | "
                f"{h.rss_held / MIB:.0f} MiB | {_f(per, '.1f')} KiB | {h.open_seconds:.1f} s | "
                f"{h.failures or 'none'} {h.error} |"
            )
    return out


def _floor_lines(r: Results) -> list[str]:
    """Where the gateway stands between grpc.aio's ceiling and forwarding's own cost."""
    echo, fwd, gw = (_get(r.unary, k, lambda x: x.rps) for k in ("echo", "forwarder", "gateway"))
    if math.isnan(fwd):
        return []
    return [
        f"- **The bare forwarder** (`bench/forwarder.py`: grpc.aio handing each request to "
        f"the gateway's OpenAI adapter and `h1` client, with no interceptor, check, route, "
        f"retry or telemetry) reaches {_f(_ratio(fwd, echo) * 100)}% of the echo server: "
        f"that is the ceiling of forwarding over HTTP from grpc.aio here. The gateway "
        f"keeps {_f(_ratio(gw, fwd) * 100)}% of the forwarder's RPS; the rest is its "
        f"pipeline (auth, limits, validation, routing, breakers, budgets, telemetry).",
    ]


def _worker_lines(r: Results) -> list[str]:
    one, two = r.unary.get(WORKER_ROWS[1]), r.unary.get(WORKER_ROWS[2])
    if not (one and two):
        return ["- 1 vs 2 gateway workers: not run."]
    ratio = _ratio(two.rps, one.rps) if one.ok and two.ok else math.nan
    cpu = r.worker_cpu.get(2, [])
    spread = ", ".join(f"{c:.1f}" for c in cpu) or "?"
    alone = ", ".join(f"{c:.1f}" for c in r.worker_cpu.get(1, [])) or "?"
    return [
        f"- **2 gateway workers vs 1: {_f(ratio, '.2f')}x** the RPS (target >= 1.7x): "
        f"`--workers 2` (a supervisor and two worker processes sharing the port with "
        f"SO_REUSEPORT) against `--workers 1`, both at 16 connections x 4 streams so the "
        f"kernel spreads whole connections over the workers. CPU seconds used during the "
        f"run: {alone} by the single worker, {spread} by each of the two.",
        "- On this 2-core machine h2load and the simulator run on the same two cores as "
        "the workers, so the second worker gets much less than a second core: the ratio "
        "is bounded by that, well below 2x, and says little about scaling on a machine "
        "where the load generator and the upstream are elsewhere.",
    ]


#: What each feature row turns on, for the reader of the report.
FEATURE_NOTES = {
    "metrics on": "Prometheus counters and histograms per call; /metrics served on its own "
    "port (not scraped during the run).",
    "tracing (0% sampled)": "`exporter: otlp` with `sample_ratio: 0.0` and the endpoint a "
    "closed local port, server spans made by the gateway (the default): nothing is sampled or "
    "exported, so this is the cost of the instrumentation itself.",
    "tracing, OTel grpc instrumentation (0% sampled)": "the same, with `server_spans: "
    "opentelemetry-grpc`: the OTel grpc aio server interceptor makes the server spans.",
    "redaction (redact, built-in detectors)": "`redact` mode on the model with the 7 built-in "
    "detectors: every prompt is scanned (it holds no PII, so nothing is replaced); answers "
    "are not scanned (`answers: false`).",
    "audit log on": "one JSON line per call appended to a file in bench/.work (no prompts).",
    "cache on (request not cacheable)": "in-memory cache, `when: deterministic`; the request "
    "sets neither temperature 0 nor a seed, so it is never looked up: this is what calls "
    "that are not cached pay with the cache on (the cacheability check), not a miss.",
}


def _feature_lines(r: Results) -> list[str]:
    out: list[str] = []
    base = r.features.get("auth off, limiter off")
    if r.features:
        out += [
            "One gateway process; the base (`auth off, limiter off`) has every optional "
            "feature off (auth, limiter, metrics, tracing, redaction, audit, cache); each "
            "other row turns on what its name says and nothing else.",
            "",
        ]
        out += _rps_table(r.features, base, "all off")
        out.append("")
        out.append("Cost per call at saturation (1/RPS difference, one gateway process):")
        out.append("")
        for name, x in r.features.items():
            if base and base.ok and x.ok and x is not base:
                cost = (1 / x.rps - 1 / base.rps) * 1e6
                note = f" — {FEATURE_NOTES[name]}" if name in FEATURE_NOTES else ""
                out.append(f"- {name}: {cost:+.1f} µs per call vs all off{note}")
    if r.clients:
        out += [
            "",
            "HTTP client behind the provider seam (auth and limiter on; the h1 row is the "
            "feature run above, the others ran half as long):",
            "",
        ]
        out += _rps_table(r.clients, r.clients.get("h1"), "h1")
    if r.client_cpu:
        out += [
            "",
            "Each HTTP client alone (`bench/http_seam.py`: the seam's own code path, no gRPC, "
            "64 requests in flight to the same simulator, one after the other):",
            "",
            "| client | requests/s | CPU µs per request |",
            "|---|---:|---:|",
        ]
        for name, seam in r.client_cpu.items():
            if seam:
                out.append(f"| {name} | {seam['rps']:.0f} | {seam['cpu_us']:.1f} |")
            else:
                out.append(f"| {name} | failed | — |")
    return out


def _peer_lines(r: Results) -> list[str]:
    if not r.peers:
        return [r.peers_note or "Not run (add `--peers litellm`)."]
    out = _rps_table(
        {k: v for k, v in r.peers.items() if "c=1" not in k}, r.peers.get("litellm"), "LiteLLM"
    )
    out.append("")
    direct = r.peers.get("direct c=1")
    for name in ("gateway c=1", "litellm c=1"):
        x = r.peers.get(name)
        if x and direct:
            out.append(
                f"- {name}: p50 {x.latency.p50_ms:.3f} ms, added p50 "
                f"{x.latency.p50_ms - direct.latency.p50_ms:+.3f} ms, added p99 "
                f"{x.latency.p99_ms - direct.latency.p99_ms:+.3f} ms"
            )
    if r.peers_note:
        out += ["", r.peers_note]
    return out


def find_section(text: str, heading: str) -> tuple[int, int] | None:
    """Line span [start, end) of the `heading` section: up to the next `## ` heading or EOF."""
    lines = text.split("\n")
    if heading not in lines:
        return None
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return start, end


def kept_section(path: Path, heading: str) -> list[str]:
    """The `heading` section of the report already at `path` (written by another tool)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    span = find_section(text, heading)
    return text.split("\n")[span[0] : span[1]] if span else []


def replace_section(path: Path, heading: str, section: list[str]) -> None:
    """Write `section` (starting with `heading`) into the report, in place or at its end."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    lines = text.split("\n")
    span = find_section(text, heading)
    if span:
        lines[span[0] : span[1]] = section
    else:
        lines += ["", *section] if lines[-1] else section
    path.write_text("\n".join(lines), encoding="utf-8")


def write(r: Results, path: Path) -> list[Target]:
    checks = targets(r)
    m = r.meta
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{('python -m bench ' + m.get('args', '')).strip()}` on {m.get('date', '?')}, "
        f"commit `{m.get('commit', '?')}`; {m.get('cores', '?')} cores ({m.get('cpu', '?')}), "
        f"Python {m.get('python', '?')}, {m.get('h2load', 'h2load ?')}; "
        f"{m.get('duration', '?')} s per side after {m.get('warmup', '?')} s of warm-up.",
        "",
        "Everything runs on the same machine over 127.0.0.1: the load generator shares the "
        "cores with what it measures, so compare the ratios, not the absolute numbers.",
        "",
    ]
    if m.get("background"):
        lines += [f"**Background load:** {m['background']}", ""]
    lines += ["## Targets", "", "```", *(t.line() for t in checks), "```", ""]
    lines += [
        "## 1. Unary throughput at saturation",
        "",
        "gRPC: h2load, 4 connections x 16 streams; direct: h2load --h1, 64 connections; "
        "the answer is 16 words on a zero-latency simulator. Echo, forwarder and gateway "
        "each ran twice, in turn (once with --quick), and the better run is shown. "
        "Unless a row says otherwise, the gateway here and in sections 2, 3 and 5 is one "
        "process with auth and the limiter on and metrics, tracing, redaction, audit and "
        "cache off.",
        "",
    ]
    lines += _rps_table(r.unary, r.unary.get("direct"), "direct") if r.unary else ["Not run."]
    lines += ["", *_floor_lines(r), *_worker_lines(r)]
    lines += [
        "",
        "## 2. Added latency",
        "",
        f"c=1: one request at a time on a zero-latency simulator; the echo server and the "
        f"bare forwarder show what grpc.aio alone, and forwarding alone, add. "
        f"@{r.moderate_rate:.0f}/s: a fixed rate, 25% of the gateway's peak from section 1, "
        f"on a simulator with 20 ms to first byte.",
        "",
    ]
    lines += _latency_table(r) if r.latency else ["Not run."]
    lines += ["", "## 3. Streaming", ""]
    lines += _streaming_lines(r) or ["Not run."]
    lines += ["", "## 4. Hot-path features and HTTP clients", ""]
    lines += _feature_lines(r) or ["Not run."]
    lines += ["", "## 5. Peers", ""]
    lines += _peer_lines(r)
    if r.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in r.notes)]
    lines += ["", "Plots: `latency.png`, `throughput.png`.", ""]
    for heading in KEPT_HEADINGS:
        kept = kept_section(path, heading)
        if kept:
            lines += [*kept] if kept[-1] == "" else [*kept, ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return checks


def plot(r: Results, directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    groups = [k for k in r.latency] + [k for k in r.peers if "c=1" in k]
    if groups:
        source = {**r.latency, **{f"{k} (peers)": v for k, v in r.peers.items() if "c=1" in k}}
        names = list(source)
        fig, ax = plt.subplots(figsize=(10, 4.5))
        width = 0.27
        for i, (pname, attr) in enumerate(
            (("p50", "p50_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms"))
        ):
            values = [getattr(source[n].latency, attr) for n in names]
            ax.bar([x + (i - 1) * width for x in range(len(names))], values, width, label=pname)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
        ax.set_ylabel("latency, ms")
        ax.set_yscale("log")
        ax.set_title("Unary latency percentiles: direct vs gateway (vs LiteLLM)")
        ax.legend()
        fig.tight_layout()
        written.append(directory / "latency.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    bars: dict[str, float] = {}
    for prefix, rows in (
        ("", r.unary),
        ("", r.features),
        ("client ", r.clients),
        ("peer ", r.peers),
    ):
        for name, x in rows.items():
            if x.ok and "c=1" not in name:
                bars[f"{prefix}{name}"] = x.rps
    if bars:
        fig, ax = plt.subplots(figsize=(10, 0.45 * len(bars) + 1.5))
        names = list(bars)
        ax.barh(names, [bars[n] for n in names], color="tab:blue")
        for y, n in enumerate(names):
            ax.text(bars[n], y, f" {bars[n]:.0f}", va="center")
        ax.invert_yaxis()
        ax.set_xlabel("requests per second at saturation")
        ax.set_title("Unary throughput per configuration")
        fig.tight_layout()
        written.append(directory / "throughput.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
