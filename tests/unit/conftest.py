"""The unit tier: pure logic, no network. A test here that opens an Internet socket,
starts a gRPC server or channel, or starts a process fails at once, so the tier stays
fast (`make test-fast`) and honest about what it needs; such a test belongs in
tests/integration (servers in-process on loopback) or tests/system (processes)."""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import grpc
import pytest

_INTERNET = (socket.AF_INET, socket.AF_INET6)
_bind, _connect, _connect_ex = socket.socket.bind, socket.socket.connect, socket.socket.connect_ex


def _refused(what: str) -> Any:
    def refuse(*args: object, **kwargs: object) -> Any:
        raise RuntimeError(f"a unit test may not {what}: move it to tests/integration")

    return refuse


def _local_only(original: Any) -> Any:
    # asyncio's loops talk to themselves over AF_UNIX socket pairs: those stay allowed.
    def call(sock: socket.socket, *args: object) -> Any:
        if sock.family in _INTERNET:
            raise RuntimeError("a unit test may not use the network: move it to tests/integration")
        return original(sock, *args)

    return call


@pytest.fixture(autouse=True)
def _no_network_servers_or_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "bind", _local_only(_bind))
    monkeypatch.setattr(socket.socket, "connect", _local_only(_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _local_only(_connect_ex))
    for module, name in (
        (grpc, "server"),
        (grpc.aio, "server"),
        (grpc, "insecure_channel"),
        (grpc, "secure_channel"),
        (grpc.aio, "insecure_channel"),
        (grpc.aio, "secure_channel"),
    ):
        monkeypatch.setattr(module, name, _refused(f"open grpc.{name}"))
    monkeypatch.setattr(subprocess, "Popen", _refused("start a process"))
