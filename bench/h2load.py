"""The h2load driver: gRPC unary over HTTP/2 (or plain HTTP/1.1 with `--h1`), bounded in time.

h2load prints totals but no percentiles, so every run also writes `--log-file` (one line
per request: start µs since epoch, HTTP status, µs to end of response) and the latency
percentiles are computed from it (h2load logs only requests of the measured period).

h2load cannot read trailers: a gRPC call that fails still counts as 2xx here. Callers
check grpc-status separately (`grpc_check`) and compare with the upstream's own count.
"""

from __future__ import annotations

import math
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import run_bounded

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def available() -> bool:
    return shutil.which("h2load") is not None


def grpc_frame(message: bytes) -> bytes:
    """One length-prefixed gRPC message: flag 0 (uncompressed), 4-byte big-endian length."""
    return b"\x00" + struct.pack(">I", len(message)) + message


@dataclass
class Percentiles:
    n: int = 0
    mean_ms: float = math.nan
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    max_ms: float = math.nan

    @classmethod
    def of(cls, samples_ms: list[float]) -> Percentiles:
        if not samples_ms:
            return cls()
        s = sorted(samples_ms)

        def pick(q: float) -> float:
            return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

        return cls(
            n=len(s),
            mean_ms=sum(s) / len(s),
            p50_ms=pick(0.50),
            p90_ms=pick(0.90),
            p99_ms=pick(0.99),
            p999_ms=pick(0.999),
            max_ms=s[-1],
        )


@dataclass
class LoadResult:
    """One h2load run: its own totals plus percentiles from the per-request log."""

    label: str
    rps: float = 0.0
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    errored: int = 0
    timeout: int = 0
    non_2xx: int = 0
    latency: Percentiles = field(default_factory=Percentiles)
    error: str = ""
    #: Filled by callers that can check: gRPC statuses of a sample, upstream request count.
    grpc_sample: dict[str, int] = field(default_factory=dict)
    upstream_seen: int | None = None

    @property
    def ok(self) -> bool:
        return not self.error and self.total > 0


@dataclass(frozen=True)
class Load:
    """What to run: target, concurrency, duration, optional fixed rate."""

    url: str
    body: Path
    headers: tuple[str, ...]
    clients: int
    streams_per_client: int
    duration: float
    warmup: float
    #: Total requests per second across all clients (None: as fast as possible).
    rate: float | None = None
    h1: bool = False
    #: A fixed number of requests instead of `duration` (and no warm-up).
    calls: int | None = None


def run(label: str, load: Load, workdir: Path) -> LoadResult:
    """Run h2load once; never longer than warm-up + duration + 30 s."""
    log_file = workdir / f"h2load-{_slug(label)}.tsv"
    log_file.unlink(missing_ok=True)
    argv = [
        "h2load",
        "-t",
        "1",
        "-c",
        str(load.clients),
        "-m",
        str(load.streams_per_client),
        *(
            ["-n", str(load.calls)]
            if load.calls is not None
            else ["-D", f"{load.duration:g}", "--warm-up-time", f"{load.warmup:g}"]
        ),
        "-d",
        str(load.body),
        f"--log-file={log_file}",
    ]
    for header in load.headers:
        argv += ["-H", header]
    if load.rate:
        argv += ["--rps", f"{max(1.0, load.rate / load.clients):g}"]
    if load.h1:
        argv.append("--h1")
    argv.append(load.url)
    seconds = load.warmup + load.duration if load.calls is None else 120.0
    proc = run_bounded(argv, timeout=seconds + 30, log=workdir / f"h2load-{_slug(label)}.log")
    result = parse_output(label, proc.stdout)
    if proc.returncode != 0 and not result.error:
        result.error = f"h2load exited {proc.returncode}: {proc.stderr.strip()[-200:]}"
    result.latency = percentiles_from_log(log_file)
    return result


def parse_output(label: str, text: str) -> LoadResult:
    result = LoadResult(label)
    finished = _FINISHED.search(text)
    requests = _REQUESTS.search(text)
    if not finished or not requests:
        result.error = "could not parse h2load output"
        return result
    result.rps = float(finished.group(3))
    total, _started, _done, ok, failed, errored, timeout = map(int, requests.groups())
    result.total, result.succeeded, result.failed = total, ok, failed
    result.errored, result.timeout = errored, timeout
    status = _STATUS.search(text)
    if status:
        result.non_2xx = sum(map(int, status.groups()[1:]))
    return result


def percentiles_from_log(path: Path) -> Percentiles:
    """Latency percentiles of the successful requests (h2load logs no warm-up request)."""
    if not path.exists():
        return Percentiles()
    samples: list[float] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            status, elapsed_us = int(parts[1]), float(parts[2])
            if 200 <= status < 300:
                samples.append(elapsed_us / 1000.0)
    path.unlink(missing_ok=True)  # up to a few MB each; the percentiles are what we keep
    return Percentiles.of(samples)


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()
