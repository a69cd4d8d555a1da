"""A client-only install, as a user of the gateway makes it: a fresh virtualenv with
`pip install ai-service` (no extra) imports the client, calls a real gateway, and holds
none of the gateway's dependencies."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_KEY, config_tree, write_config
from tests.processes import start_gateway_process, start_simulator

GATEWAY_ONLY = ("redis", "aiohttp", "opentelemetry", "pydantic", "httpx")


def pinned_constraints(tmp_path: Path) -> Path:
    """requirements/client.txt without its hashes: pip takes constraints, not hashes."""
    lines = (REPO / "requirements" / "client.txt").read_text(encoding="utf-8").splitlines()
    pins = [line.split(" ")[0] for line in lines if "==" in line and not line.startswith(" ")]
    path = tmp_path / "constraints.txt"
    path.write_text("\n".join(pins) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("client-install")
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)],
        check=True,
        timeout=300,
    )
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    wheel = next(wheels.glob("ai_service-*.whl"))
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "-q",
            "install",
            "--disable-pip-version-check",
            "-c",
            str(pinned_constraints(work)),
            str(wheel),
        ],
        check=True,
        timeout=600,
    )
    return venv


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    """A gateway process (with its simulator) on a loopback port it picks."""
    simulator, url = start_simulator(tmp_path)
    try:
        config = write_config(tmp_path / "config.yaml", config_tree(url))
        running = start_gateway_process(["--config", str(config)], tmp_path, "gw")
        try:
            yield running.address
        finally:
            running.process.kill()
    finally:
        simulator.kill()


def test_the_client_alone_calls_the_gateway_without_its_dependencies(
    client_venv: Path, gateway: str
) -> None:
    python = str(client_venv / "bin" / "python")
    script = (
        "import importlib.util, sys\n"
        "from ai_service_client import AIClient\n"
        f"with AIClient({gateway!r}, {TEST_KEY!r}) as ai:\n"
        "    answer = ai.chat.completions.create(\n"
        "        model='sim-gpt', messages=[{'role': 'user', 'content': 'hi'}])\n"
        "print(answer.choices[0].message.content)\n"
        f"print([m for m in {GATEWAY_ONLY!r} if importlib.util.find_spec(m)])\n"
    )
    result = subprocess.run(
        [python, "-c", script], capture_output=True, text=True, timeout=60, cwd=client_venv
    )
    assert result.returncode == 0, result.stderr
    answer, installed = result.stdout.splitlines()
    assert answer == "You said: hi"
    assert installed == "[]"


def test_the_gateway_command_without_its_extra_says_what_to_install(client_venv: Path) -> None:
    result = subprocess.run(
        [str(client_venv / "bin" / "ai-service")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "pip install 'ai-service[gateway]'" in result.stderr
