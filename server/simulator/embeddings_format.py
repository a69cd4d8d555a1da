"""The embedding endpoints: OpenAI's `POST /v1/embeddings` and Ollama's `POST /api/embed`.

Follows https://platform.openai.com/docs/api-reference/embeddings/create (`input` a string
or a list of strings, `encoding_format` `float` or `base64` — the latter the official
SDK's default, each vector then a base64 string of little-endian float32 —, `dimensions`;
the answer `{"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
"model", "usage": {"prompt_tokens", "total_tokens"}}`) and
https://github.com/ollama/ollama/blob/main/docs/api.md#generate-embeddings (`input` a string
or a list, `dimensions`, `truncate`; the answer `{"model", "embeddings": [[...]],
"total_duration", "load_duration", "prompt_eval_count"}`).

Each is a `WireFormat` with no stream: the shared request path gives them faults, keys,
latency and stats as it gives the chat formats. Vectors: `content.embedding`; a token is
one whitespace-separated word, as everywhere in the simulator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from .content import EMBEDDING_DIMENSIONS, embedding, packed_base64
from .ollama_format import OllamaFormat
from .openai_format import OpenAIFormat
from .planner import ReplyPlan, count_words
from .wire import ApiError, StreamEvent

#: The plan the shared path asks for; embeddings need none.
_NO_PLAN: Final = ReplyPlan(None, (), "stop", 0, 0)
_NANOS: Final = 1_000_000


def _inputs(body: dict[str, Any]) -> list[str]:
    value = body.get("input")
    return [value] if isinstance(value, str) else list(value or ())


def _dimensions(body: dict[str, Any]) -> int:
    return int(body.get("dimensions") or EMBEDDING_DIMENSIONS)


class OpenAIEmbeddingsFormat(OpenAIFormat):
    """`POST /v1/embeddings`; errors, keys and faults as the chat endpoint has them."""

    path = "/v1/embeddings"
    stream_content_type = "application/json"

    def validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            super().validate(body)  # the same "could not parse" answer
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise ApiError(400, "you must provide a model parameter", "model")
        value = body.get("input")
        if isinstance(value, str):
            value = [value]
        if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            raise ApiError(400, "'input' : input must be a string or an array of strings", "input")
        if any(not v for v in value):
            raise ApiError(400, "'$.input' is invalid. Please check the API reference.", "input")
        if body.get("encoding_format", "float") not in ("float", "base64"):
            raise ApiError(400, "Invalid value for 'encoding_format'.", "encoding_format")
        dimensions = body.get("dimensions")
        if dimensions is not None and not (
            isinstance(dimensions, int) and 1 <= dimensions <= EMBEDDING_DIMENSIONS
        ):
            raise ApiError(400, "Invalid value for 'dimensions'.", "dimensions")

    def wants_stream(self, body: Any) -> bool:
        return False

    def plan(self, body: Any) -> ReplyPlan:
        return _NO_PLAN

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(_inputs(body)):
            vector = embedding(body["model"], text, _dimensions(body))
            value: Any = packed_base64(vector) if as_base64 else vector
            data.append({"object": "embedding", "index": index, "embedding": value})
        tokens = sum(count_words(text) for text in _inputs(body))
        return orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def stream_events(self, body: Any, plan: ReplyPlan) -> list[StreamEvent]:
        raise AssertionError("embeddings are never streamed")


class OllamaEmbedFormat(OllamaFormat):
    """`POST /api/embed`; errors and faults as `/api/chat` has them."""

    path = "/api/embed"
    stream_content_type = "application/json"

    def check_headers(self, headers: Mapping[str, str]) -> ApiError | None:
        return None

    def validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "invalid character looking for beginning of value")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise ApiError(400, "model is required")
        value = body.get("input")
        if not (
            isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            raise ApiError(400, "invalid input type")
        dimensions = body.get("dimensions")
        if dimensions is not None and not (
            isinstance(dimensions, int) and 1 <= dimensions <= EMBEDDING_DIMENSIONS
        ):
            raise ApiError(400, "invalid dimensions")

    def wants_stream(self, body: Any) -> bool:
        return False

    def plan(self, body: Any) -> ReplyPlan:
        return _NO_PLAN

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        inputs = _inputs(body)
        vectors = [embedding(body["model"], text, _dimensions(body)) for text in inputs]
        tokens = sum(count_words(text) for text in inputs)
        return orjson.dumps(
            {
                "model": body["model"],
                "embeddings": vectors,
                "total_duration": (tokens + 2) * _NANOS,
                "load_duration": _NANOS,
                "prompt_eval_count": tokens,
            }
        )

    def stream_events(self, body: Any, plan: ReplyPlan) -> list[StreamEvent]:
        raise AssertionError("embeddings are never streamed")
