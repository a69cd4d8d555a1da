"""TLS and mutual TLS on the gRPC listener: the Python client, ai-client and grpcurl."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ai_service.config import ConfigError, load_config, parse_config
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient, TLSOptions
from tests.certs import Certificates, make_certificates
from tests.conftest import REPO, TEST_ENV, TEST_KEY, StartGateway, config_tree, write_config
from tests.unit.test_check_command import SIMULATOR, run_check


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def tls_settings(certs: Certificates, mutual: bool) -> dict[str, str]:
    settings = {"cert_file": str(certs.server_cert), "key_file": str(certs.server_key)}
    if mutual:
        settings["client_ca_file"] = str(certs.ca)
    return settings


async def tls_gateway(start_gateway: StartGateway, certs: Certificates, *, mutual: bool) -> Gateway:
    return await start_gateway(server={"listen": "127.0.0.1:0", "tls": tls_settings(certs, mutual)})


async def test_tls_serves_clients_that_trust_the_ca_and_refuses_plaintext(
    start_gateway: StartGateway, certs: Certificates
) -> None:
    gateway = await tls_gateway(start_gateway, certs, mutual=False)
    trusted = TLSOptions(root_certificates_path=certs.ca)
    async with AsyncAIClient(gateway.address, TEST_KEY, tls=trusted) as client:
        assert await client.ask("over tls", model="sim-gpt") == "You said: over tls"
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=3) as plaintext:
        with pytest.raises(AIServiceError) as caught:
            await plaintext.ask("no tls", model="sim-gpt")
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate(
    start_gateway: StartGateway, certs: Certificates
) -> None:
    gateway = await tls_gateway(start_gateway, certs, mutual=True)
    with_cert = TLSOptions(
        root_certificates_path=certs.ca,
        client_certificate_path=certs.client_cert,
        client_key_path=certs.client_key,
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, tls=with_cert) as client:
        assert await client.ask("mutual", model="sim-gpt") == "You said: mutual"
    without = TLSOptions(root_certificates_path=certs.ca)
    async with AsyncAIClient(gateway.address, TEST_KEY, tls=without, timeout=3) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.ask("no client cert", model="sim-gpt")
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


async def test_grpcurl_and_ai_client_speak_mutual_tls(
    start_gateway: StartGateway, certs: Certificates
) -> None:
    gateway = await tls_gateway(start_gateway, certs, mutual=True)
    tls_flags = [
        "-cacert",
        str(certs.ca),
        "-cert",
        str(certs.client_cert),
        "-key",
        str(certs.client_key),
    ]
    grpcurl = str(REPO / ".venv" / "bin" / "grpcurl")
    for args in (["list"], ["grpc.health.v1.Health/Check"]):
        result = await _run([grpcurl, *tls_flags, gateway.address, *args])
        assert result.returncode == 0, result.stderr
    assert (
        "ai_service.v1.AIService"
        in (await _run([grpcurl, *tls_flags, gateway.address, "list"])).stdout
    )
    chat = await _run(
        [
            sys.executable,
            "-m",
            "ai_service_client",
            "--addr",
            gateway.address,
            "--key",
            TEST_KEY,
            "--tls-ca",
            str(certs.ca),
            "--tls-cert",
            str(certs.client_cert),
            "--tls-key",
            str(certs.client_key),
            "chat",
            "hello over mtls",
            "--model",
            "sim-gpt",
        ]
    )
    assert chat.returncode == 0, chat.stderr
    assert "You said: hello over mtls" in chat.stdout


async def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    # The gateway runs in this event loop: wait for the child without blocking it.
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    return subprocess.CompletedProcess(
        argv, process.returncode or 0, stdout.decode(), stderr.decode()
    )


def test_demo_key_off_loopback_needs_tls_and_the_explicit_flag(certs: Certificates) -> None:
    tree = config_tree("http://127.0.0.1:9")
    tree["auth"]["keys"].append({"name": "demo", "key": "demo-key"})
    tree["server"]["listen"] = "0.0.0.0:50051"
    with pytest.raises(ConfigError, match="demo key is enabled"):
        parse_config(tree, env=TEST_ENV)
    tree["server"]["tls"] = tls_settings(certs, mutual=False)
    with pytest.raises(ConfigError, match="allow_demo_key_off_loopback"):
        parse_config(tree, env=TEST_ENV)
    tree["server"]["allow_demo_key_off_loopback"] = True
    assert parse_config(tree, env=TEST_ENV).server.tls is not None


def test_unreadable_certificate_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    from ai_service.config import TLSSettings
    from ai_service.runtime.tls import server_credentials

    settings = TLSSettings(cert_file=str(tmp_path / "missing.pem"), key_file=str(tmp_path / "k"))
    with pytest.raises(ConfigError, match=r"server\.tls\.key_file"):
        server_credentials(settings)


def test_a_key_that_is_not_the_certificates_is_a_config_error_naming_the_field(
    certs: Certificates, tmp_path: Path
) -> None:
    from ai_service.config import TLSSettings
    from ai_service.runtime.tls import server_credentials

    wrong_key = TLSSettings(cert_file=str(certs.server_cert), key_file=str(certs.client_key))
    with pytest.raises(ConfigError, match=r"server\.tls\.key_file: not the unencrypted PEM key"):
        server_credentials(wrong_key)
    not_a_cert = TLSSettings(cert_file=str(certs.server_key), key_file=str(certs.server_key))
    with pytest.raises(ConfigError, match=r"server\.tls\.cert_file: not a PEM certificate"):
        server_credentials(not_a_cert)
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    bad_ca = TLSSettings(
        cert_file=str(certs.server_cert),
        key_file=str(certs.server_key),
        client_ca_file=str(garbage),
    )
    with pytest.raises(ConfigError, match=r"server\.tls\.client_ca_file"):
        server_credentials(bad_ca)


def test_an_empty_client_ca_is_refused_rather_than_turning_mutual_tls_off(
    certs: Certificates,
) -> None:
    tree = config_tree("http://127.0.0.1:9")
    tree["server"]["tls"] = {**tls_settings(certs, mutual=False), "client_ca_file": ""}
    with pytest.raises(ConfigError, match=r"server\.tls\.client_ca_file"):
        parse_config(tree, env=TEST_ENV)


def test_check_reads_the_tls_files_and_matches_key_to_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = make_certificates(tmp_path)
    tree = config_tree(SIMULATOR)
    tree["server"]["tls"] = {
        "cert_file": str(certs.server_cert),
        "key_file": str(tmp_path / "absent.key"),
    }
    code, output = run_check(tmp_path, tree, capsys)
    assert code == 2
    assert "server.tls.key_file: cannot read" in output
    tree["server"]["tls"] = {"cert_file": str(certs.server_cert), "key_file": str(certs.client_key)}
    code, output = run_check(tmp_path, tree, capsys)
    assert code == 2
    assert "server.tls.key_file: not the unencrypted PEM key of cert_file" in output
    tree["server"]["tls"] = {"cert_file": str(certs.server_cert), "key_file": str(certs.server_key)}
    assert run_check(tmp_path, tree, capsys)[0] == 0


# --- rotation on a reload -----------------------------------------------------------------


def served_certificate(port: int) -> bytes:
    """The certificate a TLS client is shown on a new connection (DER)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # whatever it is, we want to see it
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


def der(certificate: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(certificate.read_text(encoding="utf-8"))


def trusting(ca: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(ca.read_bytes())


async def health_over_tls(address: str, ca: Path, channel: grpc.aio.Channel | None = None) -> int:
    if channel is None:
        async with grpc.aio.secure_channel(address, trusting(ca)) as fresh:
            return await health_over_tls(address, ca, fresh)
    check = health_pb2_grpc.HealthStub(channel).Check
    return int((await check(health_pb2.HealthCheckRequest(), timeout=5)).status)


@pytest.fixture
def rotating_files(tmp_path: Path) -> tuple[Certificates, Certificates, Path, Path]:
    """Two unrelated certificate sets, and the paths the gateway reads (set `old` now)."""
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = make_certificates(tmp_path / "old"), make_certificates(tmp_path / "new")
    cert, key = tmp_path / "served.pem", tmp_path / "served.key"
    shutil.copy(old.server_cert, cert)
    shutil.copy(old.server_key, key)
    return old, new, cert, key


async def test_a_reload_rotates_the_certificate_for_new_connections_and_keeps_open_ones(
    simulator: Simulator,
    tmp_path: Path,
    rotating_files: tuple[Certificates, Certificates, Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, new, cert, key = rotating_files
    tree = config_tree(simulator.base_url)
    tree["server"]["tls"] = {"cert_file": str(cert), "key_file": str(key)}
    path = write_config(tmp_path / "config.yaml", tree)
    serving = health_pb2.HealthCheckResponse.SERVING
    async with Gateway(load_config(path)) as gateway:
        address = f"localhost:{gateway.port}"
        assert await asyncio.to_thread(served_certificate, gateway.port) == der(old.server_cert)
        async with grpc.aio.secure_channel(address, trusting(old.ca)) as open_before:
            assert await health_over_tls(address, old.ca, open_before) == serving
            # The files are replaced in place, as a certificate manager does.
            shutil.copy(new.server_cert, cert)
            shutil.copy(new.server_key, key)
            with caplog.at_level(logging.INFO):
                assert await gateway.reload(str(path))
            assert await asyncio.to_thread(served_certificate, gateway.port) == der(new.server_cert)
            assert await health_over_tls(address, new.ca) == serving
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_over_tls(address, old.ca)  # trusts only the old issuer
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            # The connection opened before the rotation goes on.
            assert await health_over_tls(address, old.ca, open_before) == serving
    reloaded = [r for r in caplog.records if r.getMessage() == "config reloaded"]
    assert [getattr(r, "tls_files", None) for r in reloaded] == [
        "read again: new connections use them"
    ]


async def test_a_reload_with_bad_tls_files_is_rejected_and_the_certificate_stays(
    simulator: Simulator,
    tmp_path: Path,
    rotating_files: tuple[Certificates, Certificates, Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, new, cert, key = rotating_files
    tree = config_tree(simulator.base_url)
    tree["server"]["tls"] = {"cert_file": str(cert), "key_file": str(key)}
    path = write_config(tmp_path / "config.yaml", tree)
    async with Gateway(load_config(path)) as gateway:
        shutil.copy(new.server_cert, cert)  # the new certificate, with the old key
        with caplog.at_level(logging.INFO):
            assert not await gateway.reload(str(path))
        assert await asyncio.to_thread(served_certificate, gateway.port) == der(old.server_cert)
    messages = [r.getMessage() for r in caplog.records]
    assert "config reload rejected; the running config stays" in messages
    assert "config reloaded" not in messages
    [rejected] = [r for r in caplog.records if r.getMessage().startswith("config reload rejected")]
    assert "server.tls.key_file" in getattr(rejected, "error", "")


async def test_turning_mutual_tls_on_needs_a_restart_and_says_so(
    simulator: Simulator,
    tmp_path: Path,
    rotating_files: tuple[Certificates, Certificates, Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, _, cert, key = rotating_files
    tree = config_tree(simulator.base_url)
    tree["server"]["tls"] = {"cert_file": str(cert), "key_file": str(key)}
    path = write_config(tmp_path / "config.yaml", tree)
    async with Gateway(load_config(path)) as gateway:
        tree["server"]["tls"]["client_ca_file"] = str(old.ca)
        write_config(path, tree)
        with caplog.at_level(logging.INFO):
            assert await gateway.reload(str(path))
        # No client certificate needed: the listener is the one it started as.
        serving = health_pb2.HealthCheckResponse.SERVING
        assert await health_over_tls(f"localhost:{gateway.port}", old.ca) == serving
    [warning] = [r for r in caplog.records if "need a restart" in r.getMessage()]
    assert getattr(warning, "sections", None) == ["server"]
    reloaded = [r for r in caplog.records if r.getMessage() == "config reloaded"]
    assert all(getattr(r, "tls_files", None) is None for r in reloaded)
