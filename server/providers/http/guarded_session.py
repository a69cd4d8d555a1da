"""The aiohttp session media fetches go through: its resolver is the address guard.

Imported by the first fetch, so a gateway that never fetches a URL never loads aiohttp.
"""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ai_service.config import MediaFetchSettings
from ai_service.providers.http.address_guard import ForbiddenAddress, forbidden_reason


class GuardedResolver(AbstractResolver):
    """The system resolver, keeping only addresses the gateway may connect to."""

    def __init__(self, settings: MediaFetchSettings) -> None:
        self._settings = settings
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            reason = forbidden_reason(ipaddress.ip_address(result["host"]), self._settings)
            if reason is not None:  # one forbidden answer taints the name: refused whole
                raise ForbiddenAddress(f"{host} resolves to {reason}")
        return results

    async def close(self) -> None:
        await self._resolver.close()


def guarded_session(settings: MediaFetchSettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(settings), limit=64, use_dns_cache=False
    )
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, skip_auto_headers=("User-Agent",)
    )
