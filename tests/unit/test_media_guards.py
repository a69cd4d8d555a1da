"""Which addresses the gateway may fetch a caller's URL from."""

from __future__ import annotations

import ipaddress

import pytest

from ai_service.config import MediaFetchSettings
from ai_service.providers.http.address_guard import forbidden_reason

DEFAULT = MediaFetchSettings()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fd12::1", "private"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_non_public_addresses_are_forbidden(address: str, kind: str) -> None:
    reason = forbidden_reason(ipaddress.ip_address(address), DEFAULT)
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address), DEFAULT) is None


def test_allowed_networks_open_exactly_themselves() -> None:
    settings = MediaFetchSettings(allowed_networks=["10.20.0.0/16"])  # type: ignore[list-item]
    assert forbidden_reason(ipaddress.ip_address("10.20.3.4"), settings) is None
    assert forbidden_reason(ipaddress.ip_address("10.21.3.4"), settings) is not None
