"""Mutation testing: would the fast tests notice if the core code were wrong?

`make mutate` (or `python -m tests.mutate [--module PATH ...]`) checks out the current
commit into build/mutate/tree (so the working tree is never touched), and for each core
module lets cosmic-ray make every small change it knows (an operator swapped, a constant
moved, a condition negated, a statement removed) and run the unit tier against it. A
change the tests still pass is a survivor: a behaviour nothing guards, or a change that
does not alter behaviour (an equivalent mutant). The survivors of each module are listed
in build/mutate/<module>.txt; the totals are printed at the end.

The tree's packages are imported through its `.typecheck/` links (put first on
PYTHONPATH), so the venv's own editable install, which points at the working tree, is
not used.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "build" / "mutate"
TREE = WORK / "tree"

#: The modules whose behaviour the unit tier must pin down.
CORE = (
    "server/identity/keyring.py",
    "server/limits/buckets.py",
    "server/limits/token_quota.py",
    "server/pipeline/cache.py",
    "server/pipeline/dispatch.py",
    "server/resilience/budget.py",
    "server/resilience/circuit.py",
    "server/resilience/concurrency.py",
    "server/resilience/retry.py",
    "server/policy/redaction.py",
    "server/policy/detectors.py",
    "server/policy/validation.py",
    "server/providers/framing.py",
    "server/providers/status_mapping.py",
    "server/providers/translation.py",
    "server/providers/openai.py",
    "server/providers/anthropic.py",
    "server/providers/ollama.py",
)


def checkout() -> None:
    """A clean copy of HEAD in build/mutate/tree."""
    if TREE.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(TREE)], cwd=REPO, check=False)
        shutil.rmtree(TREE, ignore_errors=True)
    subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=True)
    subprocess.run(
        ["git", "worktree", "add", "--detach", "--quiet", str(TREE), "HEAD"], cwd=REPO, check=True
    )


def config(module: str, tests: str, timeout: float) -> Path:
    command = (
        f"env PYTHONPATH={TREE / '.typecheck'} {sys.executable} -m pytest -x -q "
        f"-p no:cacheprovider {tests}"
    )
    path = WORK / f"{Path(module).stem}.toml"
    path.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{TREE / module}"\n'
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f'test-command = "{command}"\n\n'
        '[cosmic-ray.distributor]\nname = "local"\n',
        encoding="utf-8",
    )
    return path


def run_module(module: str, tests: str, timeout: float) -> tuple[int, int, list[str]]:
    """(mutants, survivors, survivor descriptions) for one module."""
    settings = config(module, tests, timeout)
    session = WORK / f"{Path(module).stem}.sqlite"
    session.unlink(missing_ok=True)
    cosmic_ray = [sys.executable, "-m", "cosmic_ray.cli"]
    subprocess.run([*cosmic_ray, "init", str(settings), str(session)], cwd=TREE, check=True)
    subprocess.run([*cosmic_ray, "exec", str(settings), str(session)], cwd=TREE, check=True)
    return survivors(session)


def survivors(session: Path) -> tuple[int, int, list[str]]:
    with sqlite3.connect(session) as db:
        rows = db.execute(
            "SELECT s.module_path, s.operator_name, s.occurrence, s.start_pos_row, r.test_outcome "
            "FROM mutation_specs s JOIN work_results r ON s.job_id = r.job_id"
        ).fetchall()
    alive = [
        f"{Path(path).relative_to(TREE)}:{row} {operator} #{occurrence}"
        for path, operator, occurrence, row, outcome in rows
        if outcome == "SURVIVED"
    ]
    return len(rows), len(alive), sorted(alive)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make mutate", description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", help="a path under server/ (repeatable)")
    parser.add_argument("--tests", default="tests/unit", help="the tests each mutant must fail")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per test run")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    checkout()
    started = time.monotonic()
    total = alive = 0
    for module in args.module or CORE:
        count, survived, described = run_module(module, args.tests, args.timeout)
        total, alive = total + count, alive + survived
        report = WORK / f"{Path(module).stem}.txt"
        report.write_text("".join(f"{line}\n" for line in described), encoding="utf-8")
        print(f"{module}: {count - survived}/{count} killed, {survived} survived ({report})")
    minutes = (time.monotonic() - started) / 60
    score = 100 * (total - alive) / total if total else 100.0
    print(f"mutation score {score:.1f}% ({total - alive} of {total} killed) in {minutes:.0f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
