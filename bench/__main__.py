"""`python -m bench` / `make bench`: every measurement, side by side, into bench/RESULTS.md."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench import h2load, procs, report
from bench.results import Results
from bench.sections import SECTIONS, Ctx, run_section

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_SECTIONS = ("cpu", "throughput", "latency", "streaming", "features", "overload")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~2-minute smoke run")
    parser.add_argument("--duration", type=float, help="seconds per side (default 10; --quick: 3)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up (default 2; --quick: 1)")
    parser.add_argument(
        "--only", choices=[*SECTIONS], action="append", help="run only this section (repeatable)"
    )
    parser.add_argument("--peers", choices=["litellm"], action="append", default=[])
    parser.add_argument(
        "--output", type=Path, default=BENCH_DIR / "RESULTS.md", help="the report to write"
    )
    return parser.parse_args(argv)


def git_head(repo: Path) -> str:
    """The short commit hash, read from .git without running git (a worktree's .git is a
    file naming its own directory; its branches live in the main one's)."""
    git = repo / ".git"
    try:
        if git.is_file():
            git = repo / git.read_text().strip().removeprefix("gitdir: ")
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:7]
        ref = head[5:]
        if (git / "commondir").exists():
            git = git / (git / "commondir").read_text().strip()
        if (git / ref).exists():
            return (git / ref).read_text().strip()[:7]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:7]
    except OSError:
        pass
    return "unknown"


def utc_now() -> str:
    """When a report was written, to the minute."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def written_by(module: str) -> str:
    """How a section written by `python -m module` opens: what wrote it, when, at which commit."""
    return f"Written by `python -m {module}` on {utc_now()}, commit `{git_head(procs.REPO)}`"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def busy_share(seconds: float = 1.0) -> float:
    """Share of all cores busy over `seconds`, before anything of ours runs."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def metadata(args: argparse.Namespace, duration: float, warmup: float) -> dict[str, str]:
    version = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout
    busy = busy_share()
    meta = {
        "date": utc_now(),
        "commit": git_head(procs.REPO),
        "cores": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "h2load": version.strip().splitlines()[0] if version else "h2load",
        "duration": f"{duration:g}",
        "warmup": f"{warmup:g}",
        "args": " ".join(sys.argv[1:]),
    }
    if busy > 0.10:
        meta["background"] = (
            f"{busy:.0%} of the CPU was busy before the benchmark started (load average "
            f"{os.getloadavg()[0]:.2f}): other processes compete with it; numbers are lower "
            f"and noisier than on an idle machine."
        )
    print(f"background CPU busy: {busy:.0%}", flush=True)
    return meta


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not h2load.available():
        print("bench: h2load not found; install it: apt-get install -y nghttp2-client")
        return 2
    duration = args.duration or (3.0 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    procs.install_teardown()
    procs.raise_fd_limit()
    workdir = BENCH_DIR / ".work"
    workdir.mkdir(exist_ok=True)
    results = Results(meta=metadata(args, duration, warmup))
    ctx = Ctx(workdir, duration, warmup, args.quick, results, args.output)
    sections = list(args.only or DEFAULT_SECTIONS)
    if "litellm" in args.peers and "peers" not in sections:
        sections.append("peers")
    started = time.monotonic()
    try:
        for name in sections:
            try:
                run_section(name, ctx)
            except Exception as error:  # one broken section must not lose the others
                note = f"section {name} failed: {type(error).__name__}: {error}"
                results.notes.append(note)
                print(f"  {note}", flush=True)
    finally:
        procs.stop_all()
    if args.only:
        results.notes.append(f"partial run: only {', '.join(sections)}")
    results.notes.append(f"whole run took {time.monotonic() - started:.0f} s")
    checks = report.write(results, args.output)
    plots = report.plot(results, args.output.parent)
    print(f"\nwrote {args.output} and {', '.join(p.name for p in plots)}")
    for check in checks:
        print(check.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
