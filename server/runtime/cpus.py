"""How many CPUs this process may use: the default for `--workers`.

`os.cpu_count()` is the host's count; in a container or a systemd slice the process may
use far fewer, and one worker per host core would thrash. The answer is the smaller of
the CPUs in this process's affinity mask and its cgroup's CPU quota (cgroup v2 `cpu.max`,
or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), rounded up, and at least 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    counts = [n for n in (affinity, os.cpu_count(), cgroup_quota(cgroup_root)) if n]
    return max(1, min(counts)) if counts else 1


def cgroup_quota(root: Path = CGROUP_ROOT) -> int | None:
    """The CPU quota of this process's cgroup in whole CPUs (rounded up); None if unlimited."""
    for folder in _own_cgroup_folders(root):
        v2 = folder / "cpu.max"  # "max 100000" or "<quota> <period>"
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            return _whole_cpus(quota, period)
        v1 = folder / "cpu.cfs_quota_us"
        if v1.is_file():
            period_file = folder / "cpu.cfs_period_us"
            period = period_file.read_text().strip() if period_file.is_file() else "100000"
            return _whole_cpus(v1.read_text().strip(), period)
    return None


def _own_cgroup_folders(root: Path) -> list[Path]:
    """This process's cgroup folder (from /proc/self/cgroup), then the root's."""
    folders = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers in ("", "cpu", "cpu,cpuacct", "cpuacct,cpu"):
            for base in (root, root / "cpu", root / "cpu,cpuacct"):
                folders.append(base / path.lstrip("/"))
    return [*folders, root, root / "cpu", root / "cpu,cpuacct"]


def _whole_cpus(quota: str, period: str) -> int | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    if quota_us <= 0 or period_us <= 0:  # v1 says -1 for no quota
        return None
    return max(1, math.ceil(quota_us / period_us))
