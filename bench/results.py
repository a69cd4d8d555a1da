"""What a run measured: one object the sections fill and the report reads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench.h2load import LoadResult

#: Section 1 rows of the gateway with 1 and 2 worker processes (16 connections each).
WORKER_ROWS = {1: "gateway, 1 worker (16 conns)", 2: "gateway, 2 workers (16 conns)"}
#: TTFT streams start after a random pause of up to this long (bench.streaming --stagger-ms).
TTFT_STAGGER_MS = 3.0


@dataclass
class StreamRun:
    """One side of a streaming measurement, as `bench.streaming` printed it."""

    label: str
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def ttft(self, key: str) -> float:
        value = self.data.get("ttft", {}).get(key)
        return float(value) if value is not None else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return float(self.data.get("tokens_per_second", float("nan")))

    @property
    def failures(self) -> dict[str, int]:
        failures: dict[str, int] = self.data.get("failures", {})
        return failures


@dataclass
class HoldRun:
    """RSS of the gateway holding `streams` concurrent slow streams."""

    streams: int
    held: int = 0
    rss_idle: int = 0
    rss_held: int = 0
    open_seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    limit: float
    unit: str
    higher_is_better: bool
    note: str = ""

    @property
    def verdict(self) -> str:
        if math.isnan(self.value):
            return "n/a"
        ok = self.value >= self.limit if self.higher_is_better else self.value <= self.limit
        return "PASS" if ok else "FAIL"

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        unit = f" {self.unit}" if self.unit else ""
        shown = "not measured" if math.isnan(self.value) else f"{self.value:.3g}{unit}"
        note = f" ({self.note})" if self.note else ""
        return f"{self.verdict:<4}  {self.name}: {shown} (target {op} {self.limit:g}{unit}){note}"


@dataclass
class Results:
    meta: dict[str, str] = field(default_factory=dict)
    #: Section 1: saturation RPS. Keys: direct, echo, gateway, and the 1 / 2 worker rows.
    unary: dict[str, LoadResult] = field(default_factory=dict)
    #: Section 1, 1 vs 2 workers: CPU seconds each worker process used during its run.
    worker_cpu: dict[int, list[float]] = field(default_factory=dict)
    #: Section 2: keys like "direct c=1", "gateway c=1", "direct @500/s", "gateway @500/s".
    latency: dict[str, LoadResult] = field(default_factory=dict)
    moderate_rate: float = 0.0
    #: Section 3.
    ttft: dict[str, StreamRun] = field(default_factory=dict)
    relay: dict[str, StreamRun] = field(default_factory=dict)
    holds: list[HoldRun] = field(default_factory=list)
    #: Section 4: feature matrix and HTTP clients, saturation RPS.
    features: dict[str, LoadResult] = field(default_factory=dict)
    clients: dict[str, LoadResult] = field(default_factory=dict)
    #: Section 4: each HTTP client alone (`bench.http_seam`): {"rps": .., "cpu_us": ..}.
    client_cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Section 5: keys "direct", "gateway", "litellm" (+ " c=1").
    peers: dict[str, LoadResult] = field(default_factory=dict)
    peers_note: str = ""
    #: Sections written apart (CPU per call, overload): their targets, for the summary.
    section_targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections_run: list[str] = field(default_factory=list)
