"""Vertex AI: Gemini's body at Vertex's endpoints, and Claude on Vertex, with OAuth tokens.

`base_url` is the location's host (`https://{location}-aiplatform.googleapis.com`, or
`https://aiplatform.googleapis.com` for `global`); the models live under
`/{api_version}/projects/{project}/locations/{location}/publishers/{publisher}/models/`
(https://cloud.google.com/vertex-ai/generative-ai/docs/reference/rest/v1/
projects.locations.publishers.models/generateContent).

- publisher `google`: the Gemini adapter's body, answer and stream (`gemini.py`), at
  `…/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.
- publisher `anthropic`: the Anthropic adapter's Messages body without `model` and with
  `anthropic_version` in it, at `…/models/{model}:rawPredict` and `:streamRawPredict`;
  the answer and stream are Anthropic's (https://docs.anthropic.com/en/api/claude-on-vertex-ai).

Auth: `Authorization: Bearer` with an OAuth access token from google-auth (a credentials
file, or the environment's default credentials), renewed ahead of expiry by one single
flight, and renewed and retried once when Vertex answers 401 (credentials/google.py,
credentials/tokens.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ai_service.config import ProviderSettings
from ai_service.config.clouds import VertexSettings
from ai_service.providers.anthropic import (
    FALLBACK_MAX_TOKENS,
    AnthropicProvider,
    request_body,
)
from ai_service.providers.anthropic import error_from_response as anthropic_error
from ai_service.providers.base import Deployment, Provider, request_json
from ai_service.providers.credentials import Credentials
from ai_service.providers.credentials.google import GoogleTokenSource
from ai_service.providers.credentials.tokens import RefreshingToken
from ai_service.providers.embeddings import complete, embedding_from, wants_bytes
from ai_service.providers.endpoint import UpstreamEndpoint, bearer
from ai_service.providers.gemini import GeminiProvider
from ai_service.providers.http import HttpClient
from ai_service.providers.http.fetch import MediaFetcher
from ai_service.providers.translation import set_usage
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, EmbedRequest, EmbedResponse


def vertex_provider(settings: ProviderSettings, media: MediaFetcher | None = None) -> Provider:
    """The adapter for the provider's publisher: Gemini or Claude."""
    assert settings.vertex is not None  # config validation requires the block
    if settings.vertex.publisher == "anthropic":
        return VertexClaudeProvider(settings, media=media)
    return VertexProvider(settings, media=media)


def models_url(settings: ProviderSettings, vertex: VertexSettings) -> str:
    return (
        f"{settings.base_url.rstrip('/')}/{vertex.api_version}/projects/"
        f"{quote(vertex.project, safe='')}/locations/{vertex.location}/publishers/"
        f"{vertex.publisher}/models/"
    )


def oauth_token(settings: ProviderSettings) -> Credentials:
    return RefreshingToken(settings.name, GoogleTokenSource(settings), bearer)


class VertexProvider(GeminiProvider):
    kind = "vertex"
    #: Text embeddings on Vertex are the `predict` method (instances and predictions).
    _embed_method = "predict"

    def _models(self, settings: ProviderSettings) -> str:
        assert settings.vertex is not None
        return models_url(settings, settings.vertex)

    def _auth(self, settings: ProviderSettings) -> Credentials | None:
        return oauth_token(settings)

    def _embed_body(self, request: EmbedRequest, deployment: Deployment) -> dict[str, Any]:
        body: dict[str, Any] = {"instances": [{"content": text} for text in request.inputs]}
        if request.HasField("dimensions"):
            body["parameters"] = {"outputDimensionality": request.dimensions}
        return body

    @staticmethod
    def _embeddings_from(
        payload: dict[str, Any], request: EmbedRequest, deployment: Deployment, provider: str
    ) -> EmbedResponse:
        response = EmbedResponse(model=deployment.upstream_model)
        as_bytes = wants_bytes(request)
        embeddings, tokens = [], 0
        for i, prediction in enumerate(payload["predictions"]):
            found = prediction["embeddings"]
            embeddings.append(embedding_from(i, found["values"], as_bytes))
            tokens += int((found.get("statistics") or {}).get("token_count") or 0)
        set_usage(response.usage, tokens, 0)
        return complete(response, embeddings, len(request.inputs), provider)


class VertexClaudeProvider(AnthropicProvider):
    kind = "vertex"

    def _messages_endpoint(
        self, settings: ProviderSettings, http: HttpClient | None
    ) -> UpstreamEndpoint:
        assert settings.vertex is not None
        self._models_url = models_url(settings, settings.vertex)
        self._anthropic_version = settings.vertex.anthropic_version
        return UpstreamEndpoint(
            settings,
            "",
            stream_accept="text/event-stream",
            auth=oauth_token(settings),
            map_error=anthropic_error,
            http=http,
        )

    def _wire(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None,
        *,
        stream: bool,
    ) -> tuple[bytes, str | None]:
        default = FALLBACK_MAX_TOKENS if default_max_tokens is None else default_max_tokens
        body = request_body(request, deployment.upstream_model, default, stream=stream)
        del body["model"]  # in the URL
        body["anthropic_version"] = self._anthropic_version
        method = "streamRawPredict" if stream else "rawPredict"
        url = f"{self._models_url}{quote(deployment.upstream_model, safe='@')}:{method}"
        return request_json(body), url
