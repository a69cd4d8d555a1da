"""Fetching images and documents given by URL, for providers that take only bytes."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

from pydantic import Field

from ai_service.config.base import StrictSettings


class MediaFetchSettings(StrictSettings):
    """How the gateway fetches a part's URL when its provider cannot (Ollama's images, a
    document for OpenAI): never loopback, private, link-local, shared or metadata
    addresses unless `allowed_networks` names them, no redirect to one either, and within
    a size, a media type and a time limit."""

    #: Off: a URL part that needs fetching is refused (INVALID_ARGUMENT) instead.
    enabled: bool = True
    #: The whole fetch, connection to last byte.
    timeout_seconds: float = Field(10.0, gt=0)
    #: Larger bodies are refused, without reading past the limit.
    max_bytes: int = Field(5 * 1024 * 1024, gt=0)
    #: Redirects followed, each to an address checked as the first.
    max_redirects: int = Field(3, ge=0)
    #: Networks allowed although they are not public (e.g. `10.20.0.0/16` for an internal
    #: asset server, `127.0.0.1/32` for tests).
    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()
