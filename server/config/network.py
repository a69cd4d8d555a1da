"""Addresses in the config: HOST:PORT parsing and what counts as loopback."""

from __future__ import annotations

import ipaddress
import re


def split_host_port(address: str) -> tuple[str, int]:
    """'127.0.0.1:50051' / '[::1]:50051' / 'localhost:0' → (host, port)."""
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\]:(?P<p6>\d+)|(?P<host>[^:\[\]]+):(?P<port>\d+)", address
    )
    if not match:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    host = match["v6"] or match["host"]
    port = int(match["p6"] or match["port"])
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
