"""Keys issued at runtime on three gateway processes behind nginx, sharing one redis-server:
a key issued through any replica works on all of them, and once revoked is refused by all.
`ai-client keys` drives the Admin service, as an operator would."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import ListKeysRequest, ListModelsRequest
from tests.conftest import TEST_KEY, config_tree, free_port, write_config
from tests.processes import (
    VENV_BIN,
    Process,
    clean_env,
    start_gateway_process,
    start_simulator,
)
from tests.servers import nginx_in_front, redis_server

ADMIN_KEY = "admin-key-0123456789"


@dataclass
class Cluster:
    front: str
    replicas: list[str]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("keys-cluster")
    processes: list[Process] = []
    try:
        simulator, simulator_url = start_simulator(directory)
        processes.append(simulator)
        with redis_server(free_port(), directory) as redis:
            tree = config_tree(simulator_url)
            tree["auth"]["keys"].append({"name": "root", "key": ADMIN_KEY, "roles": ["admins"]})
            tree["auth"]["roles"] = [{"name": "admins", "admin": True}]
            tree["auth"]["virtual_keys"] = {"enabled": True}
            tree["shared_state"] = {"backend": "redis", "redis_url": redis.url}
            config = write_config(directory / "config.yaml", tree)
            replicas = []
            for i in range(3):
                args = ["--config", str(config), "--workers", "1"]
                gateway = start_gateway_process(args, directory, f"gateway-{i}")
                processes.append(gateway.process)
                replicas.append(gateway.address)
            # nginx's config names its port: it must be known before it starts.
            with nginx_in_front(free_port(), replicas, directory / "nginx") as front:
                yield Cluster(front, replicas)
    finally:
        for process in processes:
            process.kill()


def ai_client(address: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "ai-client"), "--addr", address, *args],
        env=clean_env(AI_SERVICE_KEY=key),
        capture_output=True,
        text=True,
        timeout=30,
    )


def status(address: str, key: str) -> grpc.StatusCode:
    """How ListModels ends on `address` with `key`."""
    with grpc.insecure_channel(address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        try:
            stub.ListModels(
                ListModelsRequest(), metadata=(("authorization", f"Bearer {key}"),), timeout=10
            )
        except grpc.RpcError as error:
            return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def wait_until(condition: object, what: str, seconds: float = 20) -> float:
    """Seconds until `condition()` held (polled), or a failure after `seconds`."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < seconds, f"never: {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def test_a_key_issued_through_one_replica_works_on_all_and_revoked_stops_on_all(
    cluster: Cluster,
) -> None:
    created = ai_client(
        cluster.front, ADMIN_KEY, "keys", "create", "batch", "--team", "search", "--rpm", "0"
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("aik_") and "issued key" in created.stderr
    for replica in cluster.replicas:
        wait_until(lambda r=replica: status(r, secret) is grpc.StatusCode.OK, f"works on {replica}")

    listed = ai_client(cluster.replicas[2], ADMIN_KEY, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if " batch " in line)
    key_id = line.split()[0]
    assert "search" in line and secret not in listed.stdout

    revoked = ai_client(cluster.replicas[0], ADMIN_KEY, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    for replica in cluster.replicas:
        wait_until(
            lambda r=replica: status(r, secret) is grpc.StatusCode.UNAUTHENTICATED,
            f"refused on {replica}",
        )
    for replica in cluster.replicas:  # and stays refused; the config's keys still work
        assert status(replica, secret) is grpc.StatusCode.UNAUTHENTICATED
        assert status(replica, TEST_KEY) is grpc.StatusCode.OK


def test_a_caller_without_the_admin_role_is_permission_denied(cluster: Cluster) -> None:
    refused = ai_client(cluster.front, TEST_KEY, "keys", "create", "sneaky")
    assert refused.returncode == 1
    assert "PERMISSION_DENIED" in refused.stderr
    with grpc.insecure_channel(cluster.front) as channel:
        stub = ai_service_pb2_grpc.AdminStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListKeys(
                ListKeysRequest(), metadata=(("authorization", f"Bearer {TEST_KEY}"),), timeout=10
            )
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
