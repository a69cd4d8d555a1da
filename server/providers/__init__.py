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
from ai_service.providers.base import CAPABILITIES, Deployment, Provider
from ai_service.providers.http.fetch import MediaFetcher
from ai_service.providers.ollama import OllamaProvider
from ai_service.providers.openai import OpenAIProvider

__all__ = ["CAPABILITIES", "Deployment", "MediaFetcher", "Provider", "create_provider"]


def create_provider(settings: ProviderSettings, media: MediaFetcher | None = None) -> Provider:
    """The adapter for a configured provider, with its own pooled HTTP client; `media`
    fetches the URL parts its API takes only as bytes (shared by every adapter)."""
    if settings.kind == "openai":
        return OpenAIProvider(settings, media=media)
    if settings.kind == "anthropic":
        return AnthropicProvider(settings, media=media)
    if settings.kind == "ollama":
        return OllamaProvider(settings, media=media)
    raise ValueError(f"unknown provider kind {settings.kind!r}")  # config validation prevents it
