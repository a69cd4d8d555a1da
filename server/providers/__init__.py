"""Provider adapters: the service's messages in, each provider's wire format out.

One module per provider kind (`openai.py`, `anthropic.py`, `ollama.py`), each holding
only its translation and error mapping; framing (`framing.py`), HTTP error mapping
(`status_mapping.py`), the HTTP clients behind one seam (`http/`), the egress settings they
share (`egress.py`) and the translation pieces they
share (`translation.py`) live once beside them.
"""

from __future__ import annotations

from ai_service.config import ProviderSettings
from ai_service.providers.anthropic import AnthropicProvider
from ai_service.providers.base import Deployment, Provider
from ai_service.providers.ollama import OllamaProvider
from ai_service.providers.openai import OpenAIProvider

__all__ = ["Deployment", "Provider", "create_provider"]


def create_provider(settings: ProviderSettings) -> Provider:
    """The adapter for a configured provider, with its own pooled HTTP client."""
    if settings.kind == "openai":
        return OpenAIProvider(settings)
    if settings.kind == "anthropic":
        return AnthropicProvider(settings)
    if settings.kind == "ollama":
        return OllamaProvider(settings)
    raise ValueError(f"unknown provider kind {settings.kind!r}")  # config validation prevents it
