"""Provider adapters: the service's messages in, each provider's wire format out.

One module per provider kind (`openai.py`, `anthropic.py`, `ollama.py`,
`azure_openai.py`, `gemini.py`, `vertex.py`, `bedrock.py`), each holding only its
translation and error mapping; framing (`framing.py`, `eventstream.py`), HTTP error
mapping (`status_mapping.py`), the HTTP clients behind one seam (`http/`), the egress
settings they share (`egress.py`), the credential seam (`credentials/`) and the
translation pieces they share (`translation.py`) live once beside them. The cloud
adapters import their SDK pieces (botocore, google-auth) only when such a provider is
configured.
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
    if settings.kind == "azure_openai":
        from ai_service.providers.azure_openai import AzureOpenAIProvider

        return AzureOpenAIProvider(settings, media=media)
    if settings.kind == "gemini":
        from ai_service.providers.gemini import GeminiProvider

        return GeminiProvider(settings, media=media)
    if settings.kind == "vertex":
        from ai_service.providers.vertex import vertex_provider

        return vertex_provider(settings, media=media)
    if settings.kind == "bedrock":
        from ai_service.providers.bedrock import BedrockProvider

        return BedrockProvider(settings, media=media)
    raise ValueError(f"unknown provider kind {settings.kind!r}")  # config validation prevents it
