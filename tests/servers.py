"""Real servers the scale-out tests need: redis-server and nginx, on free loopback ports.

Each runs in the test's temporary directory and is stopped afterwards. When the
binary (or a tool a test needs, `require_module`) is missing the test is skipped, unless
AI_SERVICE_REQUIRE_SERVERS=1 (set by .ci/run, which installs them) turns that into a
failure.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parent.parent


def require(binary: str) -> str:
    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if path is None:
        missing(f"{binary} is not installed (.ci/run installs it: apt-get install {binary})")
    return path


def require_module(name: str) -> ModuleType:
    """The Python package `name` (a test tool from the lock), imported."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the Python package {name} is not installed (make install installs the lock)")


def missing(message: str) -> NoReturn:
    """Skip for want of `message`'s tool, or fail where the tools must all be there."""
    if os.environ.get("AI_SERVICE_REQUIRE_SERVERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"{what} did not listen on {port} within {timeout}s")


class RedisServer:
    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                require("redis-server"),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, self._process, "redis-server")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        self._process = None


@contextmanager
def redis_server(port: int, directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(port, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def nginx_in_front(port: int, upstreams: Sequence[str], directory: Path) -> Iterator[str]:
    """nginx from the repo's deploy/nginx.conf, balancing over `upstreams`."""
    binary = require("nginx")
    directory.mkdir(parents=True, exist_ok=True)
    text = (REPO / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    values = {
        "LISTEN": f"127.0.0.1:{port}",
        "UPSTREAMS": "\n        ".join(f"server {address};" for address in upstreams),
        "PREFIX": str(directory),
    }
    for name, value in values.items():  # as `envsubst` with the three names would
        text = text.replace("${" + name + "}", value)
    config = directory / "nginx.conf"
    config.write_text(text, encoding="utf-8")
    process = subprocess.Popen(
        [binary, "-c", str(config), "-p", str(directory), "-e", str(directory / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, process, "nginx")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
