"""Which addresses the gateway may fetch a caller's URL from (see `fetch.py`)."""

from __future__ import annotations

import ipaddress

from ai_service.config import MediaFetchSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Not global, yet not flagged private by `ipaddress` in every Python: refused by name.
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class ForbiddenAddress(OSError):
    """A host resolved to an address the gateway may not connect to."""


def forbidden_reason(address: IPAddress, settings: MediaFetchSettings) -> str | None:
    """Why the gateway may not fetch from `address` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(address in network for network in settings.allowed_networks):
        return None
    for flag, name in (
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local (cloud metadata)"),
        (address.is_unspecified, "unspecified"),
        (address.is_multicast, "multicast"),
        (address.is_reserved, "reserved"),
        (address.is_private or address in _SHARED, "private"),
        (not address.is_global, "non-public"),
    ):
        if flag:
            return f"{address} is a {name} address"
    return None
