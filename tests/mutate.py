"""Mutation testing: would the fast tests notice if the core code were wrong?

`make mutate` (or `python -m tests.mutate [--module PATH ...]`) checks out the current
commit into build/mutate/tree (so the working tree is never touched), and for each core
module lets cosmic-ray make every small change it knows (an operator swapped, a constant
moved, a condition negated, a statement removed) and run the unit tier against it. A
change the tests still pass is a survivor: a behaviour nothing guards, or a change that
does not alter behaviour (an equivalent mutant). The survivors of each module are listed
with their diffs in build/mutate/<module>.txt; the totals are printed at the end.

Each mutant first meets the module's own unit tests (FOCUS), which kill most mutants in a
few seconds; only a mutant they miss meets the whole unit tier, so the verdict is the unit
tier's. A mutant inside a function the unit tier never calls cannot change what it sees: one
coverage run of the unit tier finds those, and they count as survivors without a test run.
`--survivors` tests only the previous run's survivors again (the module unchanged), the
quick check after writing a test.

The tree's packages are imported through its `.typecheck/` links (put first on
PYTHONPATH), so the venv's own editable install, which points at the working tree, is
not used.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

REPO = Path(__file__).resolve().parents[1]
UNIT = "tests/unit"

#: The modules whose behaviour the unit tier must pin down, each with the unit tests
#: that exercise it most directly (the first, quick pass for each mutant).
FOCUS: dict[str, tuple[str, ...]] = {
    "server/identity/keyring.py": ("test_keyring.py",),
    "server/limits/buckets.py": ("test_buckets.py",),
    "server/limits/token_quota.py": ("test_token_quota.py",),
    "server/pipeline/cache.py": ("test_cache.py",),
    "server/pipeline/dispatch.py": ("test_dispatch.py", "test_resilience_units.py"),
    "server/resilience/budget.py": ("test_resilience_units.py", "test_budget.py"),
    "server/resilience/circuit.py": ("test_resilience_units.py", "test_circuit.py"),
    "server/resilience/concurrency.py": ("test_resilience_units.py", "test_concurrency.py"),
    "server/resilience/cooldown.py": ("test_resilience_units.py", "test_cooldown.py"),
    "server/resilience/retry.py": ("test_resilience_units.py", "test_retry.py"),
    "server/policy/redaction.py": ("test_redaction_detectors.py", "test_redaction_content.py"),
    "server/policy/detectors.py": ("test_redaction_detectors.py",),
    "server/policy/scanner.py": ("test_redaction_detectors.py", "test_scanner.py"),
    "server/policy/fields.py": ("test_redaction_content.py", "test_fields.py"),
    "server/policy/streams.py": ("test_streams.py",),
    "server/policy/validation.py": ("test_validation.py",),
    "server/providers/framing.py": ("test_framing.py",),
    "server/providers/status_mapping.py": ("test_status_mapping.py",),
    "server/providers/translation.py": ("test_translation.py",),
    "server/providers/openai.py": ("test_provider_openai.py", "test_content_openai.py"),
    "server/providers/anthropic.py": (
        "test_provider_anthropic.py",
        "test_content_anthropic_ollama.py",
    ),
    "server/providers/ollama.py": ("test_provider_ollama.py", "test_content_anthropic_ollama.py"),
}
CORE = tuple(FOCUS)


class Run:
    """One checkout of HEAD and the files of a run, under `work`."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.tree = work / "tree"

    def checkout(self) -> None:
        """A clean copy of HEAD in <work>/tree."""
        if self.tree.exists():
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(self.tree)], cwd=REPO, check=False
            )
            shutil.rmtree(self.tree, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=True)
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(self.tree), "HEAD"],
            cwd=REPO,
            check=True,
        )

    def pytest(self, tests: str) -> str:
        return (
            f"env PYTHONPATH={self.tree / '.typecheck'} {sys.executable} -m pytest -x -q "
            f"-p no:cacheprovider {tests}"
        )

    def command(self, module: str, tests: str | None) -> str:
        """The test command for one mutant: the focus tests, then the whole unit tier."""
        if tests is not None:
            return self.pytest(tests)
        focus = [
            f"{UNIT}/{name}" for name in FOCUS.get(module, ()) if (self.tree / UNIT / name).exists()
        ]
        if not focus:
            return self.pytest(UNIT)
        both = f"{self.pytest(' '.join(focus))} && {self.pytest(UNIT)}"
        return f"sh -c {shlex.quote(both)}"

    def config(self, module: str, command: str, timeout: float) -> Path:
        path = self.work / f"{Path(module).stem}.toml"
        path.write_text(
            "[cosmic-ray]\n"
            f'module-path = "{self.tree / module}"\n'
            f"timeout = {timeout}\n"
            "excluded-modules = []\n"
            f"test-command = {json.dumps(command)}\n\n"
            '[cosmic-ray.distributor]\nname = "local"\n',
            encoding="utf-8",
        )
        return path

    def executed(self, modules: list[str]) -> dict[str, set[int]]:
        """The lines of each module that one run of the unit tier executes."""
        data = self.work / "coverage"
        # Its own settings: the project's (parallel files, subprocesses) are for `make coverage`.
        rcfile = self.work / "coveragerc"
        rcfile.write_text("[run]\nbranch = false\n", encoding="utf-8")
        include = ",".join(str(self.tree / module) for module in modules)
        subprocess.run(
            [
                "env",
                f"PYTHONPATH={self.tree / '.typecheck'}",
                sys.executable,
                "-m",
                "coverage",
                "run",
                f"--rcfile={rcfile}",
                f"--data-file={data}",
                f"--include={include}",
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                UNIT,
            ],
            cwd=self.tree,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        from coverage import CoverageData

        covered = CoverageData(basename=str(data))
        covered.read()
        return {
            module: set(covered.lines(str((self.tree / module).resolve())) or ())
            for module in modules
        }


def uncalled_rows(tree: ast.Module, executed: set[int]) -> set[int]:
    """Rows inside the bodies of functions of which the unit tier runs no line."""
    rows: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = range(node.body[0].lineno, (node.end_lineno or node.lineno) + 1)
            if not executed.intersection(body):
                rows.update(body)
    return rows


Span = tuple[tuple[int, int], tuple[int, int]]


def annotation_spans(tree: ast.Module) -> list[Span]:
    """Where a function's or a variable's type annotation is: with `from __future__ import
    annotations` it is a string nothing evaluates, so no change inside it can alter behaviour.
    A class's field annotations are left out: pydantic evaluates them."""
    if not any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    ):
        return []
    fields = {
        id(item)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        for item in node.body
        if isinstance(item, ast.AnnAssign)
    }
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
            every += [arg for arg in (arguments.vararg, arguments.kwarg) if arg is not None]
            found += [arg.annotation for arg in every if arg.annotation is not None]
            found += [node.returns] if node.returns is not None else []
        elif isinstance(node, ast.AnnAssign) and id(node) not in fields:
            found.append(node.annotation)
    return [
        ((node.lineno, node.col_offset), (node.end_lineno or 0, node.end_col_offset or 0))
        for node in found
    ]


NEVER_RUN = "never run: the unit tier does not call this function"
ANNOTATION = "in a type annotation, which is never evaluated"


def classify(session: Path, source: str, executed: set[int]) -> None:
    """Settle without a test run the mutants that cannot change what the unit tier sees."""
    tree = ast.parse(source)
    rows, spans = uncalled_rows(tree, executed), annotation_spans(tree)

    def annotated(start: tuple[int, int], end: tuple[int, int]) -> bool:
        return any(first <= start and end <= last for first, last in spans)

    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in db.work_items:
            mutations = item.mutations
            if all(annotated(tuple(m.start_pos), tuple(m.end_pos)) for m in mutations):
                outcome, output = None, ANNOTATION
            elif all(mutation.start_pos[0] in rows for mutation in mutations):
                outcome, output = TestOutcome.SURVIVED, NEVER_RUN
            else:
                continue
            result = WorkResult(
                worker_outcome=WorkerOutcome.SKIPPED, test_outcome=outcome, output=output
            )
            db.set_result(item.job_id, result)


def fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_module(
    run: Run, module: str, command: str, timeout: float, executed: set[int], again: bool
) -> None:
    settings = run.config(module, command, timeout)
    session = run.work / f"{Path(module).stem}.sqlite"
    stamp = session.with_suffix(".sha256")
    source = fingerprint(run.tree / module)
    cosmic_ray = [sys.executable, "-m", "cosmic_ray.cli"]
    if again and session.exists() and stamp.exists() and stamp.read_text() == source:
        # The same mutants of the same code: only the survivors are tested again.
        with sqlite3.connect(session) as db:
            db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")
    else:
        session.unlink(missing_ok=True)
        subprocess.run([*cosmic_ray, "init", str(settings), str(session)], cwd=run.tree, check=True)
        stamp.write_text(source)
    classify(session, (run.tree / module).read_text(encoding="utf-8"), executed)
    subprocess.run([*cosmic_ray, "exec", str(settings), str(session)], cwd=run.tree, check=True)


def survivors(run: Run, module: str) -> tuple[int, int, int, int, list[str]]:
    """(mutants, survivors, of which never run, in annotations, survivor descriptions) for
    one module; the mutants in annotations are not counted among the mutants."""
    session = run.work / f"{Path(module).stem}.sqlite"
    lines = (run.tree / module).read_text(encoding="utf-8").splitlines()
    with sqlite3.connect(session) as db:
        rows = db.execute(
            "SELECT s.operator_name, s.occurrence, s.start_pos_row, r.test_outcome, r.output, "
            "r.diff FROM mutation_specs s JOIN work_results r ON s.job_id = r.job_id "
            "ORDER BY s.start_pos_row, s.operator_name, s.occurrence"
        ).fetchall()
    annotated = sum(1 for row in rows if row[4] == ANNOTATION)
    alive = [row for row in rows if row[3] == TestOutcome.SURVIVED.name]
    never = sum(1 for row in alive if row[4] == NEVER_RUN)
    described = [
        f"{module}:{row} {operator} #{occurrence}"
        + (f"  (never run)\n    {lines[row - 1].strip()}" if output == NEVER_RUN else f"\n{diff}")
        for operator, occurrence, row, _, output, diff in alive
    ]
    return len(rows) - annotated, len(alive), never, annotated, described


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make mutate", description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", help="a path under server/ (repeatable)")
    parser.add_argument(
        "--tests", help="the tests each mutant must fail (default: its focus, then the unit tier)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per test run")
    parser.add_argument(
        "--survivors", action="store_true", help="test only the last run's survivors again"
    )
    parser.add_argument(
        "--work", type=Path, default=REPO / "build" / "mutate", help="where the run's files go"
    )
    args = parser.parse_args(argv)
    run = Run(args.work.resolve())
    run.work.mkdir(parents=True, exist_ok=True)
    run.checkout()
    modules: list[str] = args.module or list(CORE)
    started = time.monotonic()
    executed = run.executed(modules)
    total = alive = 0
    for module in modules:
        begun = time.monotonic()
        command = run.command(module, args.tests)
        run_module(run, module, command, args.timeout, executed[module], args.survivors)
        count, survived, never, annotated, described = survivors(run, module)
        total, alive = total + count, alive + survived
        report = run.work / f"{Path(module).stem}.txt"
        report.write_text("".join(f"{line}\n" for line in described), encoding="utf-8")
        minutes = (time.monotonic() - begun) / 60
        print(
            f"{module}: {count - survived}/{count} killed, {survived} survived "
            f"({never} never run; {annotated} in annotations not counted) "
            f"in {minutes:.0f} min ({report})",
            flush=True,
        )
    minutes = (time.monotonic() - started) / 60
    score = 100 * (total - alive) / total if total else 100.0
    print(f"mutation score {score:.1f}% ({total - alive} of {total} killed) in {minutes:.0f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
