"""Mutation testing: would the fast tests notice if the core code were wrong?

`make mutate` (or `python -m tests.mutate [--module PATH ...]`) checks out the current
commit into build/mutate/tree (so the working tree is never touched), and for each core
module lets cosmic-ray make every small change it knows (an operator swapped, a constant
moved, a condition negated, a statement removed) and run the unit tier against it. A
change the tests still pass is a survivor: a behaviour nothing guards, or a change that
does not alter behaviour (an equivalent mutant). The survivors of each module are listed
with their diffs in build/mutate/<module>.txt; the totals are printed at the end.

A mutant meets only the unit tests that can see it. One coverage run of the unit tier
records which tests run each line; a mutant inside a function meets the tests that ran
that function (a test that never calls it runs the same with or without the change), and
one the unit tier never calls counts as a survivor without a run. A mutant outside any
function, or in one that runs outside a test (a fixture, a task the test did not await),
meets the tests of its module first and then the whole unit tier. A mutant inside a type
annotation is not counted: with `from __future__ import annotations` nothing evaluates it.
`--survivors` tests only the previous run's survivors again (the module unchanged), the
quick check after writing a test; it also resumes a run that was stopped.

The tree's packages are imported through its `.typecheck/` links (put first on
PYTHONPATH), so the venv's own editable install, which points at the working tree, is
not used.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import hashlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
UNIT = "tests/unit"

#: The modules whose behaviour the unit tier must pin down.
CORE = (
    "server/identity/keyring.py",
    "server/limits/buckets.py",
    "server/limits/token_quota.py",
    "server/pipeline/dispatch.py",
    "server/resilience/budget.py",
    "server/resilience/circuit.py",
    "server/resilience/concurrency.py",
    "server/resilience/retry.py",
    "server/resilience/cooldown.py",
    "server/pipeline/cache.py",
    "server/policy/redaction.py",
    "server/policy/scanner.py",
    "server/policy/fields.py",
    "server/policy/detectors.py",
    "server/policy/streams.py",
    "server/policy/validation.py",
    "server/providers/framing.py",
    "server/providers/status_mapping.py",
    "server/providers/translation.py",
    "server/providers/openai.py",
    "server/providers/anthropic.py",
    "server/providers/ollama.py",
)

NEVER_RUN = "never run: the unit tier does not call this function"
ANNOTATION = "in a type annotation, which is never evaluated"


def pytest_command(tree: Path, tests: list[str]) -> list[str]:
    return [
        "env",
        f"PYTHONPATH={tree / '.typecheck'}",
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        *tests,
    ]


# -- which tests see which lines -----------------------------------------------------------


def functions(tree: ast.Module) -> list[tuple[int, int]]:
    """The rows of each function's body, innermost last among those that nest."""
    found = [
        (node.body[0].lineno, node.end_lineno or node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    return sorted(found, key=lambda rows: (rows[0], -rows[1]))


def innermost(spans: list[tuple[int, int]], rows: list[int]) -> tuple[int, int] | None:
    """The smallest function body holding every one of `rows`."""
    holding = [span for span in spans if all(span[0] <= row <= span[1] for row in rows)]
    return min(holding, key=lambda span: span[1] - span[0]) if holding else None


def node_id(context: str, tree: Path) -> str:
    """`test_x.test_y` (coverage's test_function context) → tests/unit/test_x.py::test_y."""
    module, _, name = context.partition(".")
    path = next(tree.joinpath(UNIT).rglob(f"{module}.py")).relative_to(tree)
    return f"{path}::{name.replace('.', '::')}"


def selection(tree: Path, module: str, covered: object) -> dict[str, Any]:
    """For each function of `module`: the tests that run it, or None when code outside a
    test runs it too; and every test that runs any line of the module."""
    from coverage import CoverageData

    assert isinstance(covered, CoverageData)
    path = str((tree / module).resolve())
    by_row: dict[int, set[str]] = {}
    for context in covered.measured_contexts():
        covered.set_query_contexts([f"^{re.escape(context)}$"])  # patterns, not names
        for row in covered.lines(path) or ():
            by_row.setdefault(row, set()).add(context)
    covered.set_query_contexts(None)
    spans = functions(ast.parse((tree / module).read_text(encoding="utf-8")))
    every: set[str] = set()
    chosen: list[tuple[int, int, list[str] | None]] = []
    for first, last in spans:
        contexts = set().union(*(by_row.get(row, set()) for row in range(first, last + 1)))
        tests = sorted(node_id(c, tree) for c in contexts if c)
        every.update(tests)
        chosen.append((first, last, None if "" in contexts else tests))
    return {
        "tree": str(tree),
        "module": module,
        "functions": chosen,
        "module_tests": sorted(every),
        "executed": sorted(by_row),
    }


def run_mutant(select_file: Path) -> int:
    """The test command of one mutant (cosmic-ray has just changed the module): the tests
    that can see the changed rows."""
    chosen = json.loads(select_file.read_text(encoding="utf-8"))
    tree = Path(chosen["tree"])
    original = select_file.with_suffix(".orig").read_text(encoding="utf-8").splitlines()
    mutated = (tree / chosen["module"]).read_text(encoding="utf-8").splitlines()
    rows = sorted(
        {
            row + 1
            for tag, first, last, _, _ in difflib.SequenceMatcher(
                None, original, mutated, autojunk=False
            ).get_opcodes()
            if tag != "equal"
            for row in range(first, max(last, first + 1))
        }
    )
    spans = [(first, last) for first, last, _ in chosen["functions"]]
    span = innermost(spans, rows) if rows else None
    by_span = {(first, last): tests for first, last, tests in chosen["functions"]}
    tests = by_span.get(span) if span is not None else None
    server = Path(chosen["server"])
    if tests:
        return in_server(server, tests)
    # Outside a function, or run outside a test: the module's tests, then everything.
    if chosen["module_tests"] and in_server(server, chosen["module_tests"]):
        return 1
    return in_server(server, [UNIT])


# -- a warm pytest -------------------------------------------------------------------------
# Starting pytest and importing the libraries costs more than most mutants' tests. One
# process in the tree does it once; each mutant's tests run in a fork of it, which imports
# the project's own code afresh, the mutated module with it.


def serve(address: Path, tree: Path, timeout: float) -> None:
    os.chdir(tree)
    sys.path[0] = str(tree)  # as `python -m pytest` run in the tree
    sys.dont_write_bytecode = True  # a mutant's bytecode must never be cached
    import pytest

    import tests.conftest  # noqa: F401 (every library the tests use, imported once)

    own = (str(tree / ".typecheck" / "ai_service"), str(tree / "tests"))
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(own):
            del sys.modules[name]
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind(str(address))
        listener.listen()
        while True:
            connection, _ = listener.accept()
            with connection:
                message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 2)
                if message == b"stop":
                    return
                pid = os.fork()
                if pid == 0:  # the child: the mutant's tests, their output to the asker's
                    listener.close()
                    os.dup2(fds[0], 1)
                    os.dup2(fds[1], 2)
                    # Plain asserts: rewriting them costs more than the tests themselves,
                    # and a failing assert fails the same without its explanation.
                    arguments = ["-x", "-q", "-p", "no:cacheprovider", "--assert=plain"]
                    code = pytest.main([*arguments, *json.loads(message)])
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(int(code))
                for fd in fds:
                    os.close(fd)
                code = settle(pid, connection, timeout)
                with contextlib.suppress(OSError):  # the asker is gone (cosmic-ray's timeout)
                    connection.send(bytes([code]))


def settle(pid: int, connection: socket.socket, timeout: float) -> int:
    """The child's exit code; it is killed if it outlives `timeout` or its asker."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return code if 0 <= code < 256 else 1
        asker_gone = select.select([connection], [], [], 0.05)[0]
        if asker_gone or time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return 1


def in_server(address: Path, tests: list[str]) -> int:
    """Run `tests` in a fork of the warm pytest at `address`; its exit code."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as connection:
        connection.connect(str(address))
        socket.send_fds(connection, [json.dumps(tests).encode()], [1, 2])
        code = connection.recv(1)
    return code[0] if code else 1


# -- a run ---------------------------------------------------------------------------------


class Run:
    """One checkout of HEAD and the files of a run, under `work`."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.tree = work / "tree"
        self.address = work / "pytest.sock"
        # The mutants' test command runs this file: a copy, which an edit of the working
        # tree during a run cannot change.
        self.runner = work / "runner.py"
        work.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(__file__, self.runner)

    @contextlib.contextmanager
    def warm_pytest(self, timeout: float, tests: list[str]) -> Iterator[None]:
        """The warm pytest (`serve`) for the mutants of one module, once `tests` pass."""
        self.address.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": str(self.tree / ".typecheck")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        command = [sys.executable, str(self.runner), "--serve", str(self.address)]
        command += ["--tree", str(self.tree)]
        server = subprocess.Popen([*command, "--timeout", str(timeout)], env=env)
        try:
            while not self.address.exists():
                if server.poll() is not None:
                    raise RuntimeError("the warm pytest did not start")
                time.sleep(0.1)
            # Every mutant would count as killed if the unchanged code failed its tests.
            if tests and in_server(self.address, tests):
                raise RuntimeError(f"the unit tests fail on the unchanged code: {tests}")
            yield
        finally:
            died = server.poll()
            server.kill()
            server.wait()
            self.address.unlink(missing_ok=True)
        if died is not None:  # every mutant after it would have counted as killed
            raise RuntimeError(f"the warm pytest died during the run ({died}): run it again")

    def checkout(self, commit: str) -> None:
        """A clean copy of `commit` in <work>/tree."""
        if self.tree.exists():
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(self.tree)], cwd=REPO, check=False
            )
            shutil.rmtree(self.tree, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=True)
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(self.tree), commit],
            cwd=REPO,
            check=True,
        )

    def coverage(self, modules: list[str]) -> object:
        """Which unit tests run which lines of `modules` (coverage data by test)."""
        data = self.work / "coverage"
        # Its own settings: the project's (parallel files, subprocesses) are for `make coverage`.
        rcfile = self.work / "coveragerc"
        rcfile.write_text("[run]\ndynamic_context = test_function\n", encoding="utf-8")
        include = ",".join(str(self.tree / module) for module in modules)
        command = pytest_command(self.tree, [UNIT])
        python = command.index(sys.executable)
        command[python + 1 : python + 1] = [
            "-m",
            "coverage",
            "run",
            f"--rcfile={rcfile}",
            f"--data-file={data}",
            f"--include={include}",
        ]
        command.remove("-x")
        subprocess.run(command, cwd=self.tree, check=True, stdout=subprocess.DEVNULL)
        from coverage import CoverageData

        covered = CoverageData(basename=str(data))
        covered.read()
        return covered

    def command(self, module: str, chosen: dict[str, Any], tests: str | None) -> str:
        """The test command of `module`'s mutants: `tests`, or those that can see each."""
        if tests is not None:
            return shlex.join(pytest_command(self.tree, shlex.split(tests)))
        select_file = self.work / f"{Path(module).stem}.select.json"
        select_file.write_text(json.dumps({**chosen, "server": str(self.address)}), "utf-8")
        shutil.copyfile(self.tree / module, select_file.with_suffix(".orig"))
        # Not the tree's copy of this file: a run of an older commit still selects tests.
        return shlex.join([sys.executable, str(self.runner), "--run-mutant", str(select_file)])

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


# -- mutants settled without a run ---------------------------------------------------------


def uncalled_rows(tree: ast.Module, executed: set[int]) -> set[int]:
    """Rows inside the bodies of functions of which the unit tier runs no line."""
    rows: set[int] = set()
    for first, last in functions(tree):
        if not executed.intersection(range(first, last + 1)):
            rows.update(range(first, last + 1))
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


def classify(session: Path, source: str, executed: set[int]) -> None:
    """Settle without a test run the mutants that cannot change what the unit tier sees."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

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
    run: Run,
    module: str,
    command: str,
    timeout: float,
    chosen: dict[str, Any],
    again: bool,
) -> None:
    executed, module_tests = set(chosen["executed"]), chosen["module_tests"]
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
    with run.warm_pytest(timeout, module_tests):
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
    alive = [row for row in rows if row[3] == "SURVIVED"]
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
        "--tests", help="the tests each mutant must fail (default: those that can see it)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per test run")
    parser.add_argument(
        "--survivors", action="store_true", help="test only the last run's survivors again"
    )
    parser.add_argument(
        "--work", type=Path, default=REPO / "build" / "mutate", help="where the run's files go"
    )
    parser.add_argument("--commit", default="HEAD", help="the commit to test (default: HEAD)")
    parser.add_argument("--run-mutant", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_mutant is not None:
        return run_mutant(args.run_mutant)
    if args.serve is not None:
        serve(args.serve, args.tree, args.timeout)
        return 0
    run = Run(args.work.resolve())
    run.work.mkdir(parents=True, exist_ok=True)
    run.checkout(args.commit)
    modules: list[str] = args.module or list(CORE)
    started = time.monotonic()
    covered = run.coverage(modules)
    total = alive = 0
    for module in modules:
        begun = time.monotonic()
        chosen = selection(run.tree, module, covered)
        command = run.command(module, chosen, args.tests)
        run_module(run, module, command, args.timeout, chosen, args.survivors)
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
