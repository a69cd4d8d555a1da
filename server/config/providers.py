"""Upstream providers: where each API is, its key, its HTTP client, timeouts and pool."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from ai_service.config.base import StrictSettings
from ai_service.config.clouds import (
    CLOUD_BLOCKS,
    AzureOpenAISettings,
    BedrockSettings,
    GeminiSettings,
    VertexSettings,
)
from ai_service.config.egress import EgressSettings


class Timeouts(StrictSettings):
    #: Opening a TCP (and TLS) connection to the upstream.
    connect: float = Field(5.0, gt=0)
    #: The longest gap between two reads: for streams, time to first token included.
    read: float = Field(60.0, gt=0)
    write: float = Field(10.0, gt=0)
    #: Waiting for a free connection of the pool.
    pool: float = Field(10.0, gt=0)


class PoolSettings(StrictSettings):
    #: An HTTP/1.1 stream holds a connection for its whole life: streaming workloads
    #: need as many as they hold streams open at once.
    max_connections: int = Field(1000, gt=0)
    max_keepalive_connections: int = Field(100, ge=0)
    keepalive_expiry_seconds: float = Field(30.0, ge=0)


class ProviderSettings(StrictSettings):
    """One upstream API endpoint, reached through one shared connection pool."""

    name: str = Field(min_length=1)
    #: The wire format: `openai` (and every OpenAI-compatible server), `anthropic`
    #: (the Messages API), `ollama` (Ollama's native `/api/chat`), `azure_openai`,
    #: `gemini` (the Gemini API), `vertex` (Vertex AI) or `bedrock` (AWS Bedrock's
    #: Converse API).
    kind: Literal[
        "openai", "anthropic", "ollama", "azure_openai", "gemini", "vertex", "bedrock"
    ] = "openai"
    #: What the adapter's path is appended to. openai: the API base with its version,
    #: e.g. https://api.openai.com/v1 (+ `/chat/completions`); anthropic: the origin,
    #: e.g. https://api.anthropic.com (+ `/v1/messages`); ollama: the origin, e.g.
    #: http://localhost:11434 (+ `/api/chat`); azure_openai: the resource endpoint, e.g.
    #: https://my-resource.openai.azure.com; gemini: https://generativelanguage.googleapis.com;
    #: vertex: https://us-central1-aiplatform.googleapis.com (the location's host);
    #: bedrock: https://bedrock-runtime.us-east-1.amazonaws.com (the region's host).
    base_url: str
    #: The gateway's key for this upstream, only ever from the environment (`${NAME}`) ...
    api_key: SecretStr | None = None
    #: ... or from a file (e.g. a mounted secret), re-read on every config reload.
    api_key_file: str | None = None
    #: Extra headers sent upstream on every call (e.g. an organisation id).
    headers: dict[str, str] = Field(default_factory=dict)
    #: The HTTP client behind the seam: `h1` (the gateway's own), `aiohttp`, `httpx2` or
    #: `httpx`; see server/providers/http.py for the numbers that chose the default.
    http_client: Literal["h1", "aiohttp", "httpx2", "httpx"] = "h1"
    timeouts: Timeouts = Field(default_factory=Timeouts)
    pool: PoolSettings = Field(default_factory=PoolSettings)
    #: kind anthropic: the `anthropic-version` header sent with every call.
    anthropic_version: str = Field("2023-06-01", min_length=1)
    #: kind openai: the request field that carries `max_tokens`. OpenAI deprecated
    #: `max_tokens` and its reasoning models (o-series, gpt-5) refuse it; `max_tokens`
    #: is for compatible servers that only know the old name.
    max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"
    #: Proxy and TLS towards this upstream, over the top-level `egress` defaults; they
    #: apply to its token endpoints too (Entra ID, Google OAuth, AWS STS).
    egress: EgressSettings = Field(default_factory=EgressSettings)
    #: Each cloud kind's own settings (server/config/clouds.py), under its kind's name.
    azure_openai: AzureOpenAISettings | None = None
    gemini: GeminiSettings | None = None
    vertex: VertexSettings | None = None
    bedrock: BedrockSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _key_from_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("api_key_file") is None:
            return data
        if data.get("api_key") is not None:
            raise ValueError("give api_key or api_key_file, not both")
        path = data["api_key_file"]
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"api_key_file: cannot read {path}: {exc.strerror}") from None
        if not key:
            raise ValueError(f"api_key_file: {path} is empty")
        return {**data, "api_key": key}

    @model_validator(mode="after")
    def _base_url_is_http(self) -> ProviderSettings:
        if not re.match(r"https?://[^/\s]+", self.base_url):
            raise ValueError("base_url must start with http:// or https:// and name a host")
        return self

    @model_validator(mode="after")
    def _cloud_block_fits_kind(self) -> ProviderSettings:
        for kind, block in CLOUD_BLOCKS.items():
            if getattr(self, block) is not None and self.kind != kind:
                raise ValueError(f"{block}: only for kind {kind}, not {self.kind}")
        if self.kind == "vertex" and self.vertex is None:
            raise ValueError("vertex: kind vertex needs its project and location")
        if self.kind == "vertex" and self.api_key is not None:
            raise ValueError(
                "api_key: Vertex AI takes OAuth tokens (vertex.credentials_file, or the "
                "environment's default credentials), not a key"
            )
        if self.kind == "bedrock" and self.bedrock is None:
            raise ValueError("bedrock: kind bedrock needs its region")
        azure = self.azure_openai
        if azure is not None and azure.entra is not None and self.api_key is not None:
            raise ValueError("api_key: give the resource key or azure_openai.entra, not both")
        return self
