"""Provider adapters: the service's messages in, each provider's wire format out."""

from __future__ import annotations

from server.config import ProviderSettings
from server.providers.base import Deployment, Provider
from server.providers.openai import OpenAIProvider

__all__ = ["Deployment", "Provider", "create_provider"]


def create_provider(settings: ProviderSettings) -> Provider:
    """The adapter for a configured provider, with its own pooled HTTP client."""
    if settings.kind == "openai":
        return OpenAIProvider(settings)
    raise ValueError(f"unknown provider kind {settings.kind!r}")  # config validation prevents it
