"""The gateway, the simulator and other programs as real processes, for the system tests.

Every process listens on a loopback port it picks itself (port 0) and reports in its log,
logs to a file in the test's directory, is waited for through its health check (bounded),
and is killed in teardown whatever the test did.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, Message
from tests.conftest import PROVIDER_SECRET, REPO, TEST_KEY

VENV_BIN = Path(sys.executable).parent
READY_TIMEOUT = 20.0  # seconds: a cold start on a loaded 2-core machine
EXIT_TIMEOUT = 20.0

# Variables that would change what the gateway or ai-client do when unset in a test.
_AMBIENT_VARIABLES = ("AI_SERVICE_CONFIG", "AI_SERVICE_ADDR", "AI_SERVICE_KEY", "AI_SERVICE_MODEL")


# --- processes ----------------------------------------------------------------------------


@dataclass
class Process:
    """A child process whose stdout and stderr go to files (no pipe can fill up and block it)."""

    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout()}\n--- stderr ---\n{self.stderr()}"

    def kill(self) -> None:
        """Stop it: SIGTERM first, so it drains and exits as it would in production (and
        writes its coverage data under `make coverage`), SIGKILL if it has not in 5 s."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        self.popen.wait(timeout=10)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _AMBIENT_VARIABLES}
    env.update(extra)
    return env


def spawn(
    argv: Sequence[str],
    logs: Path,
    name: str,
    env: dict[str, str] | None = None,
    *,
    new_session: bool = False,
) -> Process:
    """`argv` with its output in `logs`; `new_session`: a process group of its own, as a
    terminal or systemd signals whole."""
    logs.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = logs / f"{name}.out", logs / f"{name}.err"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        popen = subprocess.Popen(
            list(argv),
            cwd=REPO,
            stdout=out,
            stderr=err,
            env=env or clean_env(),
            start_new_session=new_session,
        )
    return Process(popen, stdout_path, stderr_path)


def gateway_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ai_service", "--log-format", "text", *args]


def run_gateway_to_exit(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a gateway that is expected to refuse to start; return how it ended."""
    return subprocess.run(
        gateway_argv(*args),
        cwd=REPO,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT,
    )


def wait_logged(process: Process, text: str, count: int = 1) -> None:
    """Poll the process's log until `text` appears `count` times."""
    deadline = time.monotonic() + READY_TIMEOUT
    while process.stderr().count(text) < count:
        assert process.popen.poll() is None, f"exited early\n{process.output()}"
        assert time.monotonic() < deadline, f"no {text!r} x{count}\n{process.output()}"
        time.sleep(0.02)


#: Where a process binds when no port has to be known before it starts: it picks a free
#: one itself and reports it, so no other process can take it first (as one may take a
#: port that `free_port` found free, between the test choosing it and the child binding).
ANY_PORT = "127.0.0.1:0"
_GATEWAY_LISTENING = re.compile(r"gateway listening address=(\S+)")
_HTTP_DOOR_LISTENING = re.compile(r"gateway listening .*http_address=(\S+)")
_SIMULATOR_LISTENING = re.compile(r"simulator pid \d+ on (\S+)")


def reported(process: Process, pattern: re.Pattern[str], what: str) -> str:
    """The first group of `pattern` once the process has logged it (the address it bound)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while (found := pattern.search(process.stderr())) is None:
        assert process.popen.poll() is None, f"exited before {what}\n{process.output()}"
        assert time.monotonic() < deadline, f"no {what} logged\n{process.output()}"
        time.sleep(0.02)
    return found.group(1)


def gateway_address(process: Process) -> str:
    """The address a gateway started with `--listen 127.0.0.1:0` is listening on."""
    return reported(process, _GATEWAY_LISTENING, "'gateway listening'")


def start_gateway_process(
    args: Sequence[str],
    directory: Path,
    name: str = "gateway",
    env: dict[str, str] | None = None,
    *,
    new_session: bool = False,
) -> Running:
    """`python -m ai_service <args> --listen 127.0.0.1:0`, once it is SERVING (plaintext);
    the HTTP door, which the embedded default opens, on a port it picks too.
    One process unless `args` say otherwise (a config alone means a worker per CPU, and
    workers need a fixed port: tests/system/test_workers.py starts those)."""
    workers = [] if "--workers" in args else ["--workers", "1"]
    door = [] if "--http-listen" in args or "--config" in args else ["--http-listen", ANY_PORT]
    argv = gateway_argv(*args, *workers, "--listen", ANY_PORT, *door)
    process = spawn(argv, directory, name, env, new_session=new_session)
    try:
        address = gateway_address(process)
        wait_serving(address, process)
    except BaseException:
        process.kill()
        raise
    http_address = (
        reported(process, _HTTP_DOOR_LISTENING, "the HTTP door's address")
        if "--http-listen" in argv
        else None
    )
    return Running(address, process, http_address=http_address)


def wait_serving(address: str, process: Process, timeout: float = READY_TIMEOUT) -> None:
    """Poll grpc.health.v1 Check until SERVING; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    with grpc.insecure_channel(address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        while True:
            if process.popen.poll() is not None:
                pytest.fail(f"exited {process.popen.returncode} before serving\n{process.output()}")
            try:
                response = check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = response
            except grpc.RpcError as error:
                last = error
            if time.monotonic() > deadline:
                pytest.fail(f"{address} not SERVING after {timeout}s ({last})\n{process.output()}")
            time.sleep(0.1)


def wait_http(url: str, process: Process, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.popen.poll() is not None:
            pytest.fail(f"exited {process.popen.returncode} before serving\n{process.output()}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url} not answering after {timeout}s\n{process.output()}")
        time.sleep(0.1)


def start_simulator(directory: Path, *args: str) -> tuple[Process, str]:
    """The upstream simulator as its own process (with the tests' provider key); its URL."""
    process = spawn(
        [
            sys.executable,
            "-m",
            "ai_service.simulator",
            "--listen",
            ANY_PORT,
            "--api-key",
            PROVIDER_SECRET,
            *args,
        ],
        directory,
        "simulator",
    )
    try:
        url = reported(process, _SIMULATOR_LISTENING, "simulator address")
        wait_http(f"{url}/_sim/stats", process)
    except BaseException:
        process.kill()
        raise
    return process, url


STREAM_PROMPT = "/tokens 40"  # 40 tokens at 20 tokens/s: about two seconds of stream


GRACE_SECONDS = 20


REQUEST = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hi")])


def serving_workers(
    address: str, want: int, seconds: float = 20, key: str = TEST_KEY
) -> tuple[set[str], int]:
    """The worker PIDs seen answering, and the calls answered, asking until `want` are
    seen (or `seconds` have passed: a loaded machine may start a worker late)."""
    workers: set[str] = set()
    answered = 0
    deadline = time.monotonic() + seconds
    # Each new channel is a new connection; the kernel spreads them over the workers.
    while time.monotonic() < deadline:
        with grpc.insecure_channel(address) as channel:
            stub = ai_service_pb2_grpc.AIServiceStub(channel)
            try:
                response, call = stub.ChatCompletion.with_call(
                    REQUEST, metadata=(("authorization", f"Bearer {key}"),), timeout=10
                )
            except grpc.RpcError:
                time.sleep(0.1)  # a connection to a worker that is going away
                continue
            assert response.choices[0].message.content == "You said: hi"
            workers.add(dict(call.trailing_metadata())["x-ai-worker"])
            answered += 1
        if len(workers) >= want:
            break
    return workers, answered


@dataclass
class Running:
    address: str
    process: Process
    #: The /metrics URL, when the test configured one.
    metrics: str | None = None
    #: The HTTP door's address, when it is open.
    http_address: str | None = None
