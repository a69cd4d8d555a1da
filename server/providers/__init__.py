"""Provider adapters: the service's messages in, each provider's wire format out.

One module per provider kind (`openai.py`, `anthropic.py`, `ollama.py`), each holding
only its translation and error mapping; framing (`framing.py`), HTTP error mapping
(`status_mapping.py`), the HTTP seam (`http.py`) and the translation pieces they
share (`translation.py`) live once beside them.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.config import ModelSettings, ProviderSettings
from server.providers.anthropic import AnthropicProvider
from server.providers.base import Deployment, Provider
from server.providers.ollama import OllamaProvider
from server.providers.openai import OpenAIProvider

__all__ = ["Deployment", "Provider", "create_provider"]


def create_provider(settings: ProviderSettings, models: Iterable[ModelSettings] = ()) -> Provider:
    """The adapter for a configured provider, with its own pooled HTTP client.

    `models` are the configured models; those served by this provider give their
    `default_max_tokens` (sent when a request sets none, where the API requires it).
    """
    if settings.kind == "openai":
        return OpenAIProvider(settings)
    if settings.kind == "anthropic":
        defaults = {
            target.upstream_model: model.effective_default_max_tokens
            for model in models
            for target in model.targets
            if target.provider == settings.name
        }
        return AnthropicProvider(settings, default_max_tokens=defaults)
    if settings.kind == "ollama":
        return OllamaProvider(settings)
    raise ValueError(f"unknown provider kind {settings.kind!r}")  # config validation prevents it
