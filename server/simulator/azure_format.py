"""Azure OpenAI's chat completions: OpenAI's body at Azure's URLs, with Azure's filters.

From the Azure OpenAI inference spec (`2024-10-21`, github.com/Azure/azure-rest-api-specs,
specification/cognitiveservices/data-plane/AzureOpenAI/inference/stable/2024-10-21) and
https://learn.microsoft.com/en-us/azure/ai-foundry/openai/api-version-lifecycle:

- `POST /openai/deployments/{deployment}/chat/completions?api-version=...` (the
  deployment picks the model; `api-version` is required, else 404 "Resource not found")
  and `POST /openai/v1/chat/completions` (the body's `model` names the deployment).
- Auth: `api-key: <the simulator's api_key>`, or `Authorization: Bearer` with a token the
  simulator's Entra ID endpoint issued and that has not expired; else 401 in Azure's shape
  (`{"error": {"code": "401", "message": ...}}`).
- Answers are OpenAI's, plus `prompt_filter_results` (the prompt's verdicts) and each
  choice's `content_filter_results`; a stream opens with an empty-`choices` chunk that
  carries `prompt_filter_results` (empty `id`, `model` and `object`, `created: 0`).
- `/filter prompt` (filters.py) is refused with 400 `content_filter` and
  `innererror.content_filter_result` naming `jailbreak` as filtered (the wire's spelling,
  not the spec's); `/filter answer` ends with `finish_reason: content_filter`.
- An unknown deployment is 404 `DeploymentNotFound`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson

from .config import SimulatorConfig
from .content import PromptCache
from .credentials import IssuedCredentials
from .embeddings_format import OpenAIEmbeddingsFormat
from .filters import filter_asked, filtered_answer
from .openai_format import OpenAIFormat
from .planner import ReplyPlan
from .wire import ApiError, StreamEvent

if TYPE_CHECKING:
    from aiohttp import web

_SAFE: Final = {"filtered": False, "severity": "safe"}
_NOT_DETECTED: Final = {"filtered": False, "detected": False}
_PROMPT_RESULTS: Final = {
    "hate": _SAFE,
    "jailbreak": _NOT_DETECTED,
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
_CHOICE_RESULTS: Final = {
    "hate": _SAFE,
    "protected_material_code": _NOT_DETECTED,
    "protected_material_text": _NOT_DETECTED,
    "self_harm": _SAFE,
    "sexual": _SAFE,
    "violence": _SAFE,
}
_FILTERED_ANSWER: Final = {**_CHOICE_RESULTS, "violence": {"filtered": True, "severity": "high"}}
_FILTERED_PROMPT: Final = {**_PROMPT_RESULTS, "jailbreak": {"filtered": True, "detected": True}}
_BAD_KEY: Final = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
_BAD_TOKEN: Final = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)
_FILTER_MESSAGE: Final = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)


class AzureFormat:
    """The Azure OpenAI routes; each request is served by an `AzureChat` for its deployment."""

    routes: tuple[str, ...] = (
        "/openai/deployments/{deployment}/chat/completions",
        "/openai/v1/chat/completions",
        "/openai/deployments/{deployment}/embeddings",
        "/openai/v1/embeddings",
    )

    def __init__(
        self, credentials: IssuedCredentials, config: SimulatorConfig, cache: PromptCache
    ) -> None:
        self.credentials = credentials
        self.config = config
        self.cache = cache
        self.errors = AzureChat(credentials, None, config.system_fingerprint, cache)

    def bind(self, request: web.Request, raw_body: bytes) -> AzureChat | AzureEmbeddings | ApiError:
        deployment = request.match_info.get("deployment")
        if deployment is not None and not request.query.get("api-version"):
            return ApiError(404, "Resource not found", code="404")
        fingerprint = self.config.system_fingerprint
        if request.path.endswith("/embeddings"):
            return AzureEmbeddings(self.credentials, deployment, fingerprint, self.cache)
        return AzureChat(self.credentials, deployment, fingerprint, self.cache)


class _Azure(OpenAIFormat):
    """What Azure's endpoints share: its auth, the deployment in the URL, its error shape."""

    def __init__(
        self,
        credentials: IssuedCredentials,
        deployment: str | None,
        fingerprint: str,
        cache: PromptCache,
    ) -> None:
        super().__init__(fingerprint, cache)
        self.credentials = credentials
        self.deployment = deployment

    def check_auth(self, headers: Mapping[str, str], api_key: str) -> ApiError | None:
        if "api-key" in headers:
            return None if headers["api-key"] == api_key else ApiError(401, _BAD_KEY, code="401")
        if self.credentials.bearer_problem(headers) is None:
            return None
        return ApiError(401, _BAD_TOKEN, code="401")

    def _with_model(self, body: Any) -> Any:
        """The body as OpenAI's format reads it: the deployment names the model."""
        if self.deployment is not None and isinstance(body, dict) and not body.get("model"):
            return {**body, "model": self.deployment}
        return body

    def model_of(self, body: Any) -> str | None:
        return self.deployment if self.deployment is not None else super().model_of(body)

    def error_body(self, error: ApiError) -> bytes:
        detail: dict[str, Any] = {"code": error.code or str(error.status), "message": error.message}
        if error.status == 400:
            detail.update(param=error.param, type=None if error.code else "invalid_request_error")
        if error.code == "content_filter":
            detail.update(
                status=400,
                innererror={
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": _FILTERED_PROMPT,
                },
            )
        return orjson.dumps({"error": detail})

    def error_event(self, error: ApiError) -> bytes:
        return b"data: " + self.error_body(error) + b"\n\n"

    def model_not_found(self, model: str) -> ApiError:
        return ApiError(
            404,
            "The API deployment for this resource does not exist. If you created the "
            "deployment within the last 5 minutes, please wait a moment and try again.",
            code="DeploymentNotFound",
        )


class AzureEmbeddings(_Azure, OpenAIEmbeddingsFormat):
    """Embeddings at the deployment (or v1) URL: OpenAI's body and answer."""

    path = "/openai/v1/embeddings"

    def validate(self, body: Any) -> None:
        super().validate(self._with_model(body))

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        return super().unary_body(self._with_model(body), plan)


class AzureChat(_Azure):
    """One request's view: OpenAI's format, for `deployment` (None: the v1 URL)."""

    path = "/openai/v1/chat/completions"

    def validate(self, body: Any) -> None:
        body = self._with_model(body)
        super().validate(body)
        if filter_asked(body) == "prompt":
            raise ApiError(400, _FILTER_MESSAGE, param="prompt", code="content_filter")

    def plan(self, body: Any) -> ReplyPlan:
        plan = super().plan(self._with_model(body))
        return filtered_answer(plan) if filter_asked(body) == "answer" else plan

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        completion = orjson.loads(super().unary_body(self._with_model(body), plan))
        completion["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": _PROMPT_RESULTS}
        ]
        for choice in completion["choices"]:
            choice["content_filter_results"] = _choice_results(plan)
        return orjson.dumps(completion)

    def stream_events(self, body: Any, plan: ReplyPlan) -> list[StreamEvent]:
        opening = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [
                {"prompt_index": 0, "content_filter_results": _PROMPT_RESULTS}
            ],
        }
        events = super().stream_events(self._with_model(body), plan)
        if plan.finish_reason == "content_filter":
            events = [_with_results(event, _FILTERED_ANSWER) for event in events]
        return [StreamEvent(b"data: " + orjson.dumps(opening) + b"\n\n"), *events]


def _choice_results(plan: ReplyPlan) -> dict[str, Any]:
    return _FILTERED_ANSWER if plan.finish_reason == "content_filter" else _CHOICE_RESULTS


def _with_results(event: StreamEvent, results: dict[str, Any]) -> StreamEvent:
    """A chunk event whose choices carry `results` (the [DONE] line passes unchanged)."""
    if not event.data.startswith(b"data: {"):
        return event
    chunk = orjson.loads(event.data[6:])
    for choice in chunk.get("choices") or ():
        choice["content_filter_results"] = results
    return dataclasses.replace(event, data=b"data: " + orjson.dumps(chunk) + b"\n\n")
