"""The Azure OpenAI adapter: OpenAI's translation at Azure's URLs, with Azure's key header,
content-filter errors and filter-annotated streams (tests/fixtures/README.md)."""

from __future__ import annotations

import pytest

from ai_service.errors import UpstreamInvalidRequest, UpstreamRateLimited
from ai_service.providers.azure_openai import (
    AzureOpenAIProvider,
    error_from_response,
    filtered_categories,
)
from ai_service.providers.base import Deployment
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, Message
from tests.fixtures import RecordedHttp, load_bytes, settings

HELLO = ChatCompletionRequest(messages=[Message(role="user", content="hi")])
DEPLOYMENT = Deployment("azure-docs", "gpt-4o deployment")


def azure(http: RecordedHttp, **fields: object) -> AzureOpenAIProvider:
    return AzureOpenAIProvider(settings("azure_openai", api_key="azure-key-0123", **fields), http)


async def test_deployment_urls_carry_the_api_version_and_the_key_goes_as_api_key() -> None:
    http = RecordedHttp(load_bytes("azure/stream_with_filters.sse"), piece=4096)
    chunks = [c async for c in azure(http).stream(HELLO, DEPLOYMENT)]
    url, body, headers = http.sent[-1]
    assert url == (
        "http://upstream.invalid/openai/deployments/gpt-4o%20deployment/chat/completions"
        "?api-version=2024-10-21"
    )
    assert headers["api-key"] == "azure-key-0123"
    assert "authorization" not in {name.lower() for name in headers}
    assert body["stream_options"] == {"include_usage": True}
    # The opening prompt-filter chunk carries nothing for the caller.
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content for c in chunks) == "Hello!"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.total_tokens == 11


async def test_the_v1_api_takes_the_deployment_as_the_bodys_model() -> None:
    http = RecordedHttp(load_bytes("azure/stream_with_filters.sse"), piece=4096)
    provider = azure(http, azure_openai={"api_version": "v1"})
    [c async for c in provider.stream(HELLO, DEPLOYMENT)]
    url, body, _ = http.sent[-1]
    assert url == "http://upstream.invalid/openai/v1/chat/completions"
    assert body["model"] == "gpt-4o deployment"


class _Response:
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self._headers = headers or {}

    def header(self, name: str) -> str | None:
        return self._headers.get(name)


def test_a_prompt_the_content_filter_stopped_names_its_categories() -> None:
    body = load_bytes("azure/content_filter_error.json")
    assert filtered_categories(body) == ["jailbreak"]
    error = error_from_response(_Response(400, {"apim-request-id": "req-9"}), body, "azure")  # type: ignore[arg-type]
    assert isinstance(error, UpstreamInvalidRequest)
    assert "content filter (jailbreak)" in error.message
    assert error.metadata == {"content_filter": "jailbreak", "upstream_request_id": "req-9"}


def test_the_specs_spelling_of_the_filter_results_is_read_too() -> None:
    body = (
        b'{"error": {"code": "content_filter", "message": "m", "inner_error": {"code": '
        b'"ResponsibleAIPolicyViolation", "content_filter_results": {"hate": {"filtered": true, '
        b'"severity": "high"}}}}}'
    )
    assert filtered_categories(body) == ["hate"]


@pytest.mark.parametrize(
    "body", [b'{"error": {"code": "429", "message": "Requests ... have exceeded"}}', b"not json"]
)
def test_other_errors_map_by_status(body: bytes) -> None:
    assert filtered_categories(body) is None
    error = error_from_response(_Response(429, {"retry-after": "3"}), body, "azure")  # type: ignore[arg-type]
    assert isinstance(error, UpstreamRateLimited) and error.retry_after == 3.0
