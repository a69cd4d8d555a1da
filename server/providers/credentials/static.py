"""A key sent in a header on every request, the same for the provider's whole life."""

from __future__ import annotations

from collections.abc import Mapping

from ai_service.errors import keep_secret
from ai_service.providers.credentials import OutgoingRequest


class StaticKey:
    dynamic = False

    def __init__(self, headers: Mapping[str, str], secret: str | None = None) -> None:
        if secret:
            keep_secret(secret)  # whatever the upstream echoes, callers never see it
        self.static_headers = dict(headers)

    async def authorize(self, request: OutgoingRequest) -> Mapping[str, str]:
        return self.static_headers

    def refused(self, sent: Mapping[str, str]) -> bool:
        return False  # the same key again would be refused again

    async def aclose(self) -> None:
        pass


NO_CREDENTIALS = StaticKey({})
