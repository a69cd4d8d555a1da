"""The Azure OpenAI adapter: OpenAI's chat-completions body at an Azure resource.

The body, the answer and the stream are OpenAI's (`openai.py` translates them; this
adapter only says where they go, how the gateway signs in, and what Azure's errors
mean). From the Azure OpenAI REST reference (the `2024-10-21` inference spec in
https://github.com/Azure/azure-rest-api-specs, specification/cognitiveservices/
data-plane/AzureOpenAI/inference/stable/2024-10-21/inference.json) and
https://learn.microsoft.com/en-us/azure/ai-foundry/openai/api-version-lifecycle:

- URL: `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`,
  the deployment being the model's `upstream_model`; with `api_version: v1`,
  `{endpoint}/openai/v1/chat/completions` with the deployment as the body's `model`.
- Auth: the resource key in `api-key`, or a Microsoft Entra ID token
  (`Authorization: Bearer`, client credentials, renewed before it expires).
- Content filtering: a prompt the filter stops is an HTTP 400 with
  `error.code: "content_filter"` and the verdict per category in
  `error.innererror.content_filter_result` (the spec spells it
  `inner_error.content_filter_results`; both are read): INVALID_ARGUMENT naming the
  categories. An answer the filter stops ends with `finish_reason: "content_filter"`,
  which passes through as is. A stream opens with an empty-`choices` chunk of
  `prompt_filter_results`, which carries no content and is not passed on.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from ai_service.config import ProviderSettings
from ai_service.config.clouds import AZURE_DEFAULT_API_VERSION
from ai_service.errors import UpstreamError, UpstreamInvalidRequest
from ai_service.providers.base import Deployment
from ai_service.providers.credentials import Credentials
from ai_service.providers.credentials.entra import EntraTokenSource
from ai_service.providers.credentials.tokens import RefreshingToken
from ai_service.providers.endpoint import UpstreamEndpoint, bearer, map_by_status
from ai_service.providers.http import HttpClient, UpstreamResponse
from ai_service.providers.openai import OpenAIProvider
from ai_service.providers.status_mapping import caller_message

_CONTENT_FILTER_CODES = frozenset({"content_filter", "ResponsibleAIPolicyViolation"})


class AzureOpenAIProvider(OpenAIProvider):
    kind = "azure_openai"

    def _chat_endpoint(self, settings: ProviderSettings, http: HttpClient) -> UpstreamEndpoint:
        azure = settings.azure_openai
        version = azure.api_version if azure is not None else AZURE_DEFAULT_API_VERSION
        self._v1 = version == "v1"
        self._origin = settings.base_url.rstrip("/")
        self._query = f"?api-version={quote(version, safe='')}"
        return UpstreamEndpoint(
            settings,
            "/openai/v1/chat/completions",
            stream_accept="text/event-stream",
            credentials=lambda key: {"api-key": key},
            auth=entra_credentials(settings, http),
            map_error=error_from_response,
            http=http,
        )

    def _embeddings_endpoint(
        self, settings: ProviderSettings, http: HttpClient
    ) -> UpstreamEndpoint:
        return UpstreamEndpoint(
            settings,
            "/openai/v1/embeddings",
            stream_accept="application/json",
            credentials=lambda key: {"api-key": key},
            auth=self._endpoint.auth,  # one key or token for both
            map_error=error_from_response,
            http=http,
        )

    def _url(self, deployment: Deployment, path: str) -> str | None:
        if self._v1:
            return None  # the body's model names the deployment
        name = quote(deployment.upstream_model, safe="")
        return f"{self._origin}/openai/deployments/{name}{path}{self._query}"


def entra_credentials(settings: ProviderSettings, http: HttpClient) -> Credentials | None:
    """Entra ID tokens, when configured (None: the resource key, or nothing)."""
    azure = settings.azure_openai
    if azure is None or azure.entra is None:
        return None
    return RefreshingToken(settings.name, EntraTokenSource(azure.entra, http), bearer)


def error_from_response(response: UpstreamResponse, body: bytes, provider: str) -> UpstreamError:
    """By status, except a prompt Azure's content filter stopped, which names the categories."""
    categories = filtered_categories(body)
    error: UpstreamError
    if response.status == 400 and categories is not None:
        which = ", ".join(categories) or "unnamed categories"
        error = UpstreamInvalidRequest(
            f"upstream {provider!r}: the prompt was stopped by Azure OpenAI's content "
            f"filter ({caller_message(which)})"
        )
        error.metadata["content_filter"] = ",".join(categories)
    else:
        error = map_by_status(response, body, provider)
    request_id = response.header("apim-request-id")
    if request_id:
        error.metadata["upstream_request_id"] = request_id  # what Azure support asks for
    return error


def filtered_categories(body: bytes) -> list[str] | None:
    """The categories an Azure content-filter error says were filtered, in order; None when
    the body is not a content-filter error."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return None
    inner = error.get("innererror") or error.get("inner_error") or {}
    codes = {error.get("code"), inner.get("code") if isinstance(inner, dict) else None}
    if not codes & _CONTENT_FILTER_CODES:
        return None
    results: Any = {}
    if isinstance(inner, dict):
        results = inner.get("content_filter_result") or inner.get("content_filter_results")
    if not isinstance(results, dict):
        return []
    return [
        name
        for name, verdict in results.items()
        if isinstance(verdict, dict) and verdict.get("filtered") is True
    ]
