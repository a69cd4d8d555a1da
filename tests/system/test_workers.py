"""`--workers N`: several processes share the port, all serve, and SIGTERM drains them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, Message
from tests.conftest import REPO, RESTRICTED_KEY, TEST_KEY, config_tree, free_port, write_config
from tests.processes import (
    GRACE_SECONDS,
    STREAM_PROMPT,
    Process,
    Running,
    gateway_argv,
    serving_workers,
    spawn,
    start_simulator,
    wait_logged,
    wait_serving,
)


def spawn_two_workers(tmp_path: Path, sim_url: str) -> tuple[Process, str, int]:
    """`python -m server --workers 2` on the test config with metrics on: the supervisor,
    its address and its metrics port."""
    # The workers share the gRPC and metrics ports (SO_REUSEPORT): both must be known
    # before they start, unlike a single gateway's (tests/processes.py).
    tree = config_tree(sim_url)
    metrics_port = free_port()
    tree["observability"] = {"metrics": {"listen": f"127.0.0.1:{metrics_port}"}}
    config = write_config(tmp_path / "config.yaml", tree)
    address = f"127.0.0.1:{free_port()}"
    argv = gateway_argv("--config", str(config), "--listen", address, "--workers", "2")
    return spawn(argv, tmp_path, "gateway"), address, metrics_port


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Running]:
    simulator, sim_url = start_simulator(tmp_path)
    gateway: Process | None = None
    try:
        gateway, address, metrics_port = spawn_two_workers(tmp_path, sim_url)
        wait_serving(address, gateway)
        yield Running(address, gateway, metrics=f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        if gateway is not None:
            gateway.kill()
        simulator.kill()


def requests_counted(metrics_url: str) -> int:
    text = httpx.get(metrics_url, timeout=5).text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("ai_gateway_requests_total{") and 'code="OK"' in line
        )
    )


REQUEST = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hi")])


def test_two_workers_both_serve_are_restarted_and_sigterm_drains_both(
    two_workers: Running,
) -> None:
    workers, answered = serving_workers(two_workers.address, 2)
    assert len(workers) == 2
    assert str(two_workers.process.pid) not in workers  # the supervisor serves nothing itself
    # One /metrics covers every worker (prometheus multiprocess mode, set up by the
    # supervisor); the worker not scraped hands its counts on within a second.
    assert two_workers.metrics is not None
    deadline = time.monotonic() + 10
    while requests_counted(two_workers.metrics) != answered and time.monotonic() < deadline:
        time.sleep(0.1)
    assert requests_counted(two_workers.metrics) == answered

    crashed = sorted(workers)[0]
    os.kill(int(crashed), signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        workers, _ = serving_workers(two_workers.address, 2, seconds=2)
        if crashed not in workers and len(workers) == 2:
            break
    assert crashed not in workers and len(workers) == 2, "the crashed worker was not replaced"

    two_workers.process.popen.send_signal(signal.SIGTERM)
    assert two_workers.process.popen.wait(timeout=30) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the supervisor"


def test_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    simulator, sim_url = start_simulator(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "config.yaml", config_tree(sim_url))
    supervisor = spawn(
        gateway_argv("--config", str(config), "--listen", address, "--workers", "2"),
        tmp_path,
        "gateway",
    )
    try:
        wait_serving(address, supervisor)
        workers, _ = serving_workers(address, 2)
        supervisor.popen.send_signal(signal.SIGKILL)  # no chance to stop its workers itself
        supervisor.popen.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
            time.sleep(0.1)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "orphaned workers"
    finally:
        supervisor.kill()
        simulator.kill()


# --- stop signals at awkward moments --------------------------------------------------------

AUTH = (("authorization", f"Bearer {TEST_KEY}"),)
DRAIN_EXIT_TIMEOUT = 30.0  # seconds: a drain plus a cold worker start, loaded 2 cores


def exit_code(process: Process) -> int:
    try:
        return process.popen.wait(timeout=DRAIN_EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {DRAIN_EXIT_TIMEOUT}s after the stop\n{process.output()}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_sent_to_the_whole_group_drains_in_flight_calls(tmp_path: Path, signum: int) -> None:
    """Ctrl-C, systemd's KillMode=control-group: the workers get the signal, and then the
    supervisor passes on a SIGTERM to them while they drain; that second one must not kill them.
    """
    simulator, sim_url = start_simulator(tmp_path, "--tokens-per-second", "20")
    tree = config_tree(sim_url, server__shutdown_grace_seconds=GRACE_SECONDS)
    config = write_config(tmp_path / "config.yaml", tree)
    address = f"127.0.0.1:{free_port()}"
    argv = gateway_argv("--config", str(config), "--listen", address, "--workers", "2")
    supervisor = spawn(argv, tmp_path, "gateway", new_session=True)
    try:
        wait_serving(address, supervisor)
        request = ChatCompletionRequest(
            model="sim-gpt", messages=[Message(role="user", content=STREAM_PROMPT)]
        )
        with grpc.insecure_channel(address) as channel:
            stream = ai_service_pb2_grpc.AIServiceStub(channel).StreamChatCompletion(
                request, metadata=AUTH, timeout=DRAIN_EXIT_TIMEOUT
            )
            chunks = [next(stream) for _ in range(3)]  # the call is in flight in a worker
            os.killpg(supervisor.pid, signum)
            chunks += list(stream)  # a killed worker fails this: UNAVAILABLE, Socket closed
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert chunks[-1].usage.completion_tokens == 40
        assert exit_code(supervisor) == 0, supervisor.output()
    finally:
        if supervisor.popen.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.popen.wait(timeout=10)
        simulator.kill()


def test_sigterm_while_the_workers_start_waits_for_them_and_exits_0(tmp_path: Path) -> None:
    """A worker still importing has no handler yet: the stop must wait for it, not kill it."""
    supervisor, _, _ = spawn_two_workers(tmp_path, "http://127.0.0.1:9")  # no call is made
    try:
        wait_logged(supervisor, "supervisor started")  # its workers are still importing
        supervisor.popen.send_signal(signal.SIGTERM)
        assert exit_code(supervisor) == 0, supervisor.output()
    finally:
        supervisor.kill()
    assert supervisor.stderr().count("draining") == 2, supervisor.output()


def test_sigterm_while_a_restarted_worker_starts_waits_for_it_and_exits_0(
    two_workers: Running,
) -> None:
    supervisor = two_workers.process
    workers, _ = serving_workers(two_workers.address, 1)
    os.kill(int(workers.pop()), signal.SIGKILL)
    wait_logged(supervisor, "worker started", count=3)  # its replacement is importing
    supervisor.popen.send_signal(signal.SIGTERM)
    assert exit_code(supervisor) == 0, supervisor.output()
    assert supervisor.stderr().count("draining") == 2, supervisor.output()


# --- limits across the workers of one host ---------------------------------------------------


def test_a_key_limit_holds_across_the_workers_of_one_host(tmp_path: Path) -> None:
    """The memory backend with `--workers 2`: a 5 calls/minute key gets 5 calls, not 5
    per worker."""
    simulator, sim_url = start_simulator(tmp_path)
    tree = config_tree(sim_url)
    tree["auth"]["keys"][0]["rate_limit"] = {"requests_per_minute": 5}
    tree["auth"]["keys"][1]["rate_limit"] = {"requests_per_minute": 0}
    config = write_config(tmp_path / "config.yaml", tree)
    address = f"127.0.0.1:{free_port()}"
    argv = gateway_argv("--config", str(config), "--listen", address, "--workers", "2")
    supervisor = spawn(argv, tmp_path, "gateway")
    try:
        wait_serving(address, supervisor)
        workers, _ = serving_workers(address, 2, key=RESTRICTED_KEY)  # both are serving
        assert len(workers) == 2
        started = time.monotonic()
        served = 0
        for _ in range(30):  # each on a new connection: the kernel spreads them
            with grpc.insecure_channel(address) as channel:
                stub = ai_service_pb2_grpc.AIServiceStub(channel)
                try:
                    stub.ChatCompletion(REQUEST, metadata=AUTH, timeout=10)
                except grpc.RpcError as error:
                    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error
                    continue
                served += 1
        refilled = (time.monotonic() - started) / 12  # one call every 12 s
    finally:
        supervisor.kill()
        simulator.kill()
    assert 5 <= served <= 5 + refilled, served


_HAMMER = """
import asyncio, sys
from ai_service.limits.host_buckets import HostRateLimiter
from ai_service.limits.rules import RateRule

async def main():
    limiter = HostRateLimiter(sys.argv[1])
    rule = RateRule(per_minute=1, burst=40_000)
    sys.stdin.readline()  # both start at once
    allowed = sum([(await limiter.take("requests:k", 1, rule)).allowed for _ in range(30_000)])
    print(allowed)

asyncio.run(main())
"""


def test_workers_taking_at_once_from_one_bucket_never_pass_it(tmp_path: Path) -> None:
    path = str(tmp_path / "buckets")
    hammers = [
        subprocess.Popen(
            [sys.executable, "-c", _HAMMER, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            text=True,
        )
        for _ in range(2)
    ]
    for hammer in hammers:
        assert hammer.stdin is not None
        hammer.stdin.write("go\n")
        hammer.stdin.flush()
    allowed = [int(hammer.communicate(timeout=60)[0]) for hammer in hammers]
    assert sum(allowed) == 40_000, allowed  # 60,000 asked at once for a burst of 40,000
    assert min(allowed) > 0  # both took their share
