"""What every provider adapter is: a small protocol in the service's own types.

An adapter translates `ChatCompletionRequest` into its provider's JSON and the
provider's answer back into `ChatCompletionResponse` / `ChatCompletionChunk`
directly (no parallel hierarchy of internal types), and raises only the
gateway's errors. Deadlines, retries and bookkeeping are not its business.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ai_service.errors import InvalidRequest, UpstreamUnavailable
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbedRequest,
    EmbedResponse,
)

#: The capabilities a model can have (ModelCapabilities' yes-or-no fields).
CAPABILITIES = (
    "vision",
    "documents",
    "audio_input",
    "reasoning",
    "tools",
    "prompt_caching",
    "embeddings",
)


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a public model is served: a configured provider and its model name."""

    provider: str
    upstream_model: str

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.upstream_model}"


class Provider(Protocol):
    name: str
    kind: str
    #: Whether `refusal` can ever refuse (the router skips asking when none can).
    refuses_requests: bool
    #: The capabilities (CAPABILITIES) the provider's API can carry at all; a model's
    #: configuration may only narrow them.
    carries: frozenset[str]

    # `default_max_tokens`: the serving model's, sent when the request sets none where
    # the API requires a max_tokens (Anthropic); None for the adapter's own fallback.

    async def complete(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,
    ) -> ChatCompletionResponse: ...

    def stream(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """Chunks as they arrive; the last carries finish_reason and usage.

        Ends only after the provider's own end-of-stream marker: a stream that
        stops without it raises `UpstreamUnavailable`, never ends quietly.
        """
        ...

    def refusal(self, request: ChatCompletionRequest) -> InvalidRequest | None:
        """Why this provider's API cannot take `request`, if it cannot: asked before a
        deployment is chosen, so that another deployment (or a fallback) may serve it."""
        ...

    async def embed(self, request: EmbedRequest, deployment: Deployment) -> EmbedResponse:
        """One vector per input, in order, or a failure: never a shorter list. Only
        called on providers that carry "embeddings"."""
        ...

    async def aclose(self) -> None: ...


def request_json(body: dict[str, Any]) -> bytes:
    """An upstream request's JSON body, in bytes sized to it. orjson's own keep the
    buffer it wrote into (at least 4 KiB, ~2.7x a 3 KB body), and a stream's request
    body lives as long as the stream: 10,000 held streams kept ~40 MB of it."""
    return bytes(memoryview(orjson.dumps(body)))


def parse_json_body(body: bytes, what: str) -> dict[str, Any]:
    """A JSON object from the upstream, or UpstreamUnavailable naming what broke."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamUnavailable(f"upstream sent malformed JSON in {what}: {exc}") from None
    if not isinstance(payload, dict):
        raise UpstreamUnavailable(
            f"upstream sent {type(payload).__name__} in {what}, not an object"
        )
    return payload
