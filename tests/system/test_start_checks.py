"""Configs that start as written, and starts that refuse a bad config at once.

examples/config.yaml (every setting) starts with its variables set and certificates made
for it; the supervisor refuses a config a worker could not start before it forks any
(exit 2, one message, no restart loop); `ai-service check` run as an unprivileged user
names an audit path that user cannot write; both commands print their version.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.certs import make_certificates
from tests.conftest import EXAMPLE_CONFIG_ENV, REPO, config_tree, free_port, write_config
from tests.processes import ANY_PORT, VENV_BIN, clean_env, gateway_address, gateway_argv, spawn
from tests.servers import redis_server

EXAMPLE = REPO / "examples" / "config.yaml"


def test_the_full_example_config_starts_as_written(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    shutil.copy(certs.server_cert, tls_dir / "server.pem")
    shutil.copy(certs.server_key, tls_dir / "server.key")
    shutil.copy(certs.ca, tls_dir / "clients-ca.pem")
    # Redis's port is in its config: it must be known before it starts.
    with redis_server(free_port(), tmp_path) as redis:
        env = {
            **EXAMPLE_CONFIG_ENV,
            "AI_SERVICE_TLS_DIR": str(tls_dir),
            "AI_SERVICE_AUDIT_PATH": str(tmp_path / "audit" / "audit.jsonl"),
            "REDIS_URL": redis.url,
        }
        argv = gateway_argv(
            "--config",
            str(EXAMPLE),
            "--workers",
            "1",
            "--listen",
            ANY_PORT,
            "--http-listen",
            ANY_PORT,
            "--metrics-listen",
            ANY_PORT,
        )
        process = spawn(argv, tmp_path, "example", env=clean_env(**env))
        try:
            address = gateway_address(process)
            credentials = grpc.ssl_channel_credentials(
                certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes()
            )
            with grpc.secure_channel(address, credentials) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=30)
                except grpc.FutureTimeoutError:
                    pytest.fail(f"never served over TLS\n{process.output()}")
                check = health_pb2_grpc.HealthStub(channel).Check
                answer = check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            process.kill()


def test_the_supervisor_refuses_a_bad_config_before_it_forks(tmp_path: Path) -> None:
    tree = config_tree("http://127.0.0.1:9")
    tree["server"]["listen"] = f"127.0.0.1:{free_port()}"
    tree["server"]["tls"] = {"cert_file": str(tmp_path / "absent.pem"), "key_file": "x.key"}
    config = write_config(tmp_path / "config.yaml", tree)
    result = subprocess.run(
        gateway_argv("--config", str(config), "--workers", "2", "--log-format", "text"),
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("server.tls.cert_file: cannot read") == 1
    assert "worker started" not in result.stderr + result.stdout


def test_budgets_in_each_workers_memory_are_refused_before_it_forks(tmp_path: Path) -> None:
    tree = config_tree("http://127.0.0.1:9")
    tree["server"]["listen"] = f"127.0.0.1:{free_port()}"
    tree["auth"]["teams"] = [{"name": "search", "budget": {"amount": 10}}]
    config = write_config(tmp_path / "config.yaml", tree)
    result = subprocess.run(
        gateway_argv("--config", str(config), "--workers", "2", "--log-format", "text"),
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert (
        "auth.teams[0].budget: budgets across --workers 2 need shared_state.backend: redis"
        in result.stderr
    )
    assert "worker started" not in result.stderr + result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
def test_check_as_an_unprivileged_user_names_an_audit_path_it_cannot_write(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    try:
        subprocess.run([sys.executable, "-c", "import ai_service"], user=nobody.pw_uid, check=True)
    except (PermissionError, subprocess.CalledProcessError):
        pytest.skip("this interpreter or checkout is not readable by another user")
    locked = tmp_path / "root-only"
    locked.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    tree = config_tree("http://127.0.0.1:9")
    tree["observability"] = {"audit": {"path": str(locked / "audit" / "audit.jsonl")}}
    config = write_config(tmp_path / "config.yaml", tree)
    config.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "ai_service", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        env={**clean_env(), "HOME": "/"},
    )
    assert result.returncode == 2, result.stderr
    assert (
        f"observability.audit.path: cannot create {locked / 'audit' / 'audit.jsonl'}"
        in result.stderr
    )
    assert "is not writable by this user" in result.stderr


@pytest.mark.parametrize("command", ["ai-service", "ai-client"])
def test_both_commands_print_their_version(command: str) -> None:
    result = subprocess.run(
        [str(VENV_BIN / command), "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.startswith(f"{command} ")
