"""Google's generateContent API, as the Gemini API and Vertex AI serve it, and Claude on Vertex.

From https://ai.google.dev/api/generate-content, https://ai.google.dev/api/caching#Schema,
https://cloud.google.com/vertex-ai/generative-ai/docs/reference/rest and the google-genai
SDK's types (google/genai/types.py):

- Gemini API: `POST /{v1beta|v1}/models/{model}:generateContent` and
  `:streamGenerateContent` (`?alt=sse`: server-sent events, one `data:` line per
  `GenerateContentResponse` and no end marker; without it one JSON array, streamed).
  Auth: `x-goog-api-key` (or `?key=`) equal to the simulator's `api_key`; a wrong key is
  400 `INVALID_ARGUMENT` with reason `API_KEY_INVALID`, none at all 403.
- Vertex AI: `POST /{v1|v1beta1}/projects/{project}/locations/{location}/publishers/google/
  models/{model}:generateContent` (and `:streamGenerateContent`), the same body; auth by
  `Authorization: Bearer` with a token the simulator's Google token endpoint issued and
  that has not expired, else 401 `UNAUTHENTICATED`. Every content needs its `role`.
- Claude on Vertex: `…/publishers/anthropic/models/{model}:rawPredict` and
  `:streamRawPredict`: the Messages API's body without `model` and with
  `anthropic_version` in it; the answer and stream are Anthropic's.
- The request: `contents` (`role` `user`|`model`, `parts` with `text`,
  `functionCall{name,args}`, `functionResponse{name,response}`), `systemInstruction`,
  `tools[].functionDeclarations[]` whose `parameters` may use only the Schema subset (an
  unknown keyword is 400 `Unknown name "..."`, as the API answers it), `toolConfig.
  functionCallingConfig` (`AUTO`, `ANY` + `allowedFunctionNames`, `NONE`),
  `generationConfig` (`temperature` 0..2, `topP`, `maxOutputTokens`, `stopSequences` at
  most 5, `responseMimeType`, `responseSchema`, `seed`, penalties).
- The answer: `candidates[0].content.parts` (text; each function call whole, with no id),
  `finishReason` (`STOP` for tool calls too, `MAX_TOKENS`, `SAFETY`), `usageMetadata`
  (`promptTokenCount`, `candidatesTokenCount`, `totalTokenCount`; zero counts left out),
  `modelVersion`, `responseId`. `/filter prompt` (filters.py) answers
  `promptFeedback.blockReason: SAFETY` with no candidates; `/filter answer` a candidate
  with `finishReason: SAFETY` and no content.
- Errors: `{"error": {"code", "message", "status"}}` (google.rpc.Status); a stream's
  failure after the 200 is a `data:` line holding such an object.

The conversation is planned in OpenAI's shape (`to_planner`): `systemInstruction` is a
system message, function calls an assistant's `tool_calls`, each function response a
tool message (its `response.result` when that is all it holds, else its JSON), the
declarations' schemas with their types in lower case.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import itertools
import os
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson

from .anthropic_format import AnthropicFormat
from .config import SimulatorConfig
from .content import PromptCache, effort_of_budget, embedding, sign
from .credentials import IssuedCredentials
from .filters import filter_asked, filtered_answer
from .openai_format import CACHE_MIN_TOKENS, CACHE_STEP_TOKENS
from .planner import ReplyPlan, count_prompt_tokens, count_words, plan_reply
from .wire import ApiError, StreamEvent

if TYPE_CHECKING:
    from aiohttp import web

#: The Schema keywords `parameters` and `responseSchema` take (the Developer API's).
SCHEMA_KEYWORDS: Final = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "items", "minItems",
        "maxItems", "properties", "required", "minProperties", "maxProperties", "minLength",
        "maxLength", "pattern", "minimum", "maximum", "default", "example", "anyOf",
        "propertyOrdering",
    }
)  # fmt: skip
TYPES: Final = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"})
STATUS_NAMES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
MAX_STOP_SEQUENCES: Final = 5
#: The inline media the models take (https://ai.google.dev/gemini-api/docs/vision,
#: .../document-processing, .../audio).
INLINE_TYPES: Final = frozenset(
    {
        "image/png", "image/jpeg", "image/webp", "image/heic", "image/heif",
        "application/pdf", "text/plain",
        "audio/wav", "audio/mp3", "audio/aiff", "audio/aac", "audio/ogg", "audio/flac",
    }
)  # fmt: skip
_FAULT_MESSAGES: Final = {
    400: "Request contains an invalid argument. (simulated)",
    403: "The caller does not have permission (simulated)",
    404: "Requested entity was not found. (simulated)",
    429: "Resource has been exhausted (e.g. check quota). (simulated)",
    500: "An internal error has occurred. (simulated)",
    503: "The model is overloaded. Please try again later. (simulated)",
    504: "Deadline expired before operation could complete. (simulated)",
}
_FINISH: Final = {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS"}
_BLOCKED_RATING: Final = {
    "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
    "probability": "HIGH",
    "blocked": True,
}
_ID_PREFIX: Final = os.urandom(4).hex()
_ids = itertools.count(1)


def _invalid(message: str) -> ApiError:
    return ApiError(400, message)


class GeminiFormat:
    """The Gemini API and Vertex AI routes; each request is served by a `GeminiCall` (or, for
    Claude on Vertex, a `VertexClaude`) bound to the model and method its URL names."""

    routes: tuple[str, ...] = (
        "/{version:v1beta|v1}/models/{target}",
        "/{version:v1|v1beta1}/projects/{project}/locations/{location}/publishers/google/"
        "models/{target}",
        "/{version:v1|v1beta1}/projects/{project}/locations/{location}/publishers/anthropic/"
        "models/{target}",
    )

    def __init__(
        self, credentials: IssuedCredentials, config: SimulatorConfig, cache: PromptCache
    ) -> None:
        self.credentials = credentials
        self.config = config
        self.cache = cache
        self.errors = GeminiCall(credentials, cache, "", "", vertex=False, sse=True, key=None)

    def bind(self, request: web.Request, raw_body: bytes) -> GeminiCall | VertexClaude | ApiError:
        model, _, method = request.match_info["target"].rpartition(":")
        vertex = "project" in request.match_info
        if "/publishers/anthropic/" in request.path:
            if method not in ("rawPredict", "streamRawPredict"):
                return ApiError(404, f"Method {method!r} is not served for Claude models.")
            return VertexClaude(self.credentials, model, self.cache)
        if method in _EMBED_METHODS[vertex] and model:
            embed = GeminiEmbed if method != "predict" else VertexPredict
            return embed(
                self.credentials,
                self.cache,
                model,
                method,
                vertex=vertex,
                sse=False,
                key=request.query.get("key"),
            )
        if method not in ("generateContent", "streamGenerateContent") or not model:
            return ApiError(404, f"Method {method!r} not found for models/{model}.")
        return GeminiCall(
            self.credentials,
            self.cache,
            model,
            method,
            vertex=vertex,
            sse=request.query.get("alt") == "sse",
            key=request.query.get("key"),
        )


class GeminiCall:
    """One generateContent or streamGenerateContent request, for `model`."""

    path = "/v1beta/models"
    stream_content_type = "text/event-stream"

    def __init__(
        self,
        credentials: IssuedCredentials,
        cache: PromptCache,
        model: str,
        method: str,
        *,
        vertex: bool,
        sse: bool,
        key: str | None,
    ) -> None:
        self.credentials = credentials
        self.cache = cache
        self.model = model
        self.method = method
        self.vertex = vertex
        self.sse = sse
        self.key = key
        if method == "streamGenerateContent" and not sse:
            self.stream_content_type = "application/json"

    # -- requests ---------------------------------------------------------------------------

    def check_headers(self, headers: Mapping[str, str]) -> ApiError | None:
        return None

    def check_auth(self, headers: Mapping[str, str], api_key: str) -> ApiError | None:
        if self.vertex:
            problem = self.credentials.bearer_problem(headers)
            if problem is None:
                return None
            return ApiError(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential. See "
                "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                code="ACCESS_TOKEN_EXPIRED" if problem == "expired" else "CREDENTIALS_MISSING",
            )
        given = headers.get("x-goog-api-key") or self.key
        if not given:
            return ApiError(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if given != api_key:
            return ApiError(
                400, "API key not valid. Please pass a valid API key.", code="API_KEY_INVALID"
            )
        return None

    def validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise _invalid("Invalid JSON payload received. Expected an object.")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _invalid("* GenerateContentRequest.contents: contents is not specified\n")
        for i, content in enumerate(contents):
            role = content.get("role") if isinstance(content, dict) else None
            if role not in ("user", "model") and (self.vertex or role is not None):
                raise _invalid("Please use a valid role: user, model.")
            parts = content.get("parts") if isinstance(content, dict) else None
            if not isinstance(parts, list) or not parts:
                raise _invalid(
                    f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not "
                    f"be empty.\n"
                )
            for j, part in enumerate(parts):
                if not isinstance(part, dict) or not part:
                    raise _invalid(
                        f"* GenerateContentRequest.contents[{i}].parts[{j}].data: required "
                        f"oneof field 'data' must have one initialized field\n"
                    )
                _check_inline(field(part, "inlineData"))
        _check_signatures(body)
        for i, tool in enumerate(body.get("tools") or ()):
            for j, declaration in enumerate(field(tool, "functionDeclarations") or ()):
                if not isinstance(declaration, dict) or not declaration.get("name"):
                    raise _invalid(
                        f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: "
                        f"Name cannot be empty.\n"
                    )
                if "parameters" in declaration:
                    where = f"tools[{i}].function_declarations[{j}].parameters"
                    check_schema(declaration["parameters"], where)
        config = field(body, "generationConfig") or {}
        if not isinstance(config, dict):
            raise _invalid('Invalid JSON payload received. Unknown name "generationConfig".')
        temperature = config.get("temperature")
        if isinstance(temperature, int | float) and not 0 <= temperature <= 2:
            raise _invalid(
                f"Unable to submit request because it has a temperature value of {temperature} "
                f"but the supported range is from 0 (inclusive) to 2.0001 (exclusive). Update "
                f"the value and try again."
            )
        limit = field(config, "maxOutputTokens")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise _invalid(
                "* GenerateContentRequest.generation_config.max_output_tokens: must be positive\n"
            )
        stop = field(config, "stopSequences")
        if stop is not None and (not isinstance(stop, list) or len(stop) > MAX_STOP_SEQUENCES):
            raise _invalid(
                "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop "
                "sequences are supported\n"
            )
        if field(config, "responseSchema") is not None:
            check_schema(field(config, "responseSchema"), "generation_config.response_schema")

    def model_of(self, body: Any) -> str | None:
        return self.model

    def wants_stream(self, body: Any) -> bool:
        return self.method == "streamGenerateContent"

    def plan(self, body: Any) -> ReplyPlan:
        request = to_planner(body)
        plan = plan_reply(request)
        if filter_asked(request) == "answer":
            return filtered_answer(plan)
        return dataclasses.replace(plan, cached_tokens=self._cached(request))

    def _cached(self, request: dict[str, Any]) -> int:
        """Implicit caching: the prompt's prefix, when seen before and long enough."""
        prefix, tools = request["messages"][:-1], request.get("tools") or ()
        tokens = count_prompt_tokens(prefix, tools)
        if tokens < CACHE_MIN_TOKENS or not self.cache.seen("gemini", self.model, prefix, tools):
            return 0
        return tokens - tokens % CACHE_STEP_TOKENS

    # -- answers ----------------------------------------------------------------------------

    def _usage(self, plan: ReplyPlan, final: bool = True) -> dict[str, Any]:
        usage: dict[str, Any] = {"promptTokenCount": plan.prompt_tokens}
        answer = plan.completion_tokens - plan.reasoning_tokens  # thoughts are counted apart
        if final and answer:
            usage["candidatesTokenCount"] = answer
        if plan.cached_tokens:
            usage["cachedContentTokenCount"] = plan.cached_tokens
        if final and plan.reasoning_tokens:
            usage["thoughtsTokenCount"] = plan.reasoning_tokens
        usage["totalTokenCount"] = plan.total_tokens if final else plan.prompt_tokens
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": plan.prompt_tokens}]
        if self.vertex:
            usage["trafficType"] = "ON_DEMAND"
        return usage

    def _envelope(self, body: Any, response_id: str) -> dict[str, Any]:
        envelope: dict[str, Any] = {"modelVersion": self.model, "responseId": response_id}
        if self.vertex:
            envelope["createTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        return envelope

    def _candidate(self, parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
        candidate: dict[str, Any] = {}
        if parts:
            candidate["content"] = {"parts": parts, "role": "model"}
        if finish is not None:
            candidate["finishReason"] = finish
            if finish == "SAFETY":
                candidate["safetyRatings"] = [_BLOCKED_RATING]
        candidate["index"] = 0
        return candidate

    def _answer(self, body: Any, plan: ReplyPlan, response_id: str) -> dict[str, Any]:
        if filter_asked(to_planner(body)) == "prompt":
            return {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [_BLOCKED_RATING]},
                "usageMetadata": self._usage(plan, final=False),
                **self._envelope(body, response_id),
            }
        parts = _thought_parts(body, plan) + _answer_parts(body, plan)
        return {
            "candidates": [self._candidate(parts, finish_reason(plan))],
            "usageMetadata": self._usage(plan),
            **self._envelope(body, response_id),
        }

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        return orjson.dumps(self._answer(body, plan, _response_id()))

    def stream_events(self, body: Any, plan: ReplyPlan) -> list[StreamEvent]:
        """One chunk per word (or one with the function calls), then the last chunk with the
        finish reason and the final usage; every chunk carries the prompt's usage."""
        response_id = _response_id()
        answer = self._answer(body, plan, response_id)
        if "candidates" not in answer:  # a blocked prompt: that one chunk
            return self._framed([answer])
        envelope = self._envelope(body, response_id)
        partial = self._usage(plan, final=False)

        def chunk(parts: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "candidates": [self._candidate(parts, None)],
                "usageMetadata": partial,
                **envelope,
            }

        chunks: list[dict[str, Any]] = []
        thoughts = _thought_parts(body, plan)
        if thoughts:  # the summary word by word, its signature on the last piece
            pieces = plan.reasoning_pieces()
            chunks += [chunk([{"text": piece, "thought": True}]) for piece in pieces[:-1]]
            chunks.append(chunk([{**thoughts[0], "text": pieces[-1]}]))
        answer_parts = _answer_parts(body, plan)
        if plan.tool_calls:
            chunks.append(chunk(answer_parts))
        else:
            pieces = plan.pieces()
            chunks += [chunk([{"text": piece}]) for piece in pieces[:-1]]
            if pieces:  # the last piece carries the answer part's signature, if any
                chunks.append(chunk([{**answer_parts[0], "text": pieces[-1]}]))
        last = self._candidate(
            [] if plan.finish_reason == "content_filter" else [{"text": ""}], finish_reason(plan)
        )
        chunks.append({"candidates": [last], "usageMetadata": self._usage(plan), **envelope})
        return self._framed(chunks)

    def _framed(self, chunks: list[dict[str, Any]]) -> list[StreamEvent]:
        if self.sse:
            return [StreamEvent(b"data: " + orjson.dumps(c) + b"\r\n\r\n", True) for c in chunks]
        # Without alt=sse the stream is one JSON array, sent as it is written.
        events = [
            StreamEvent((b"[" if i == 0 else b",\r\n") + orjson.dumps(c), True)
            for i, c in enumerate(chunks)
        ]
        events.append(StreamEvent(b"]"))
        return events

    # -- errors -----------------------------------------------------------------------------

    def error_body(self, error: ApiError) -> bytes:
        status = STATUS_NAMES.get(error.status, "UNKNOWN" if error.status < 500 else "INTERNAL")
        detail: dict[str, Any] = {"code": error.status, "message": error.message, "status": status}
        if error.code is not None:
            detail["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": error.code,
                    "domain": "googleapis.com",
                    "metadata": {
                        "service": "aiplatform.googleapis.com"
                        if self.vertex
                        else "generativelanguage.googleapis.com"
                    },
                }
            ]
        return orjson.dumps({"error": detail})

    def error_event(self, error: ApiError) -> bytes:
        return b"data: " + self.error_body(error) + b"\r\n\r\n"

    def model_not_found(self, model: str) -> ApiError:
        if self.vertex:
            return ApiError(
                404,
                f"Publisher Model `projects/sim/locations/sim/publishers/google/models/{model}` "
                f"was not found or your project does not have access to it.",
            )
        return ApiError(
            404,
            f"models/{model} is not found for API version v1beta, or is not supported for "
            f"{self.method}. Call ListModels to see the list of available models and their "
            f"supported methods.",
        )

    def fault_error(self, status: int, message: str | None) -> ApiError:
        return ApiError(
            status, message or _FAULT_MESSAGES.get(status, f"Simulated error {status}.")
        )

    def malformed_body(self) -> bytes:
        return b'{"candidates": [{"content": {"parts": [{"text": "'

    def malformed_event(self) -> bytes:
        return b'data: {"candidates": [{"content": {"parts": [{"text": "\r\n\r\n'


_EMBED_METHODS: Final = {
    False: frozenset({"embedContent", "batchEmbedContents"}),
    True: frozenset({"predict"}),
}


class GeminiEmbed(GeminiCall):
    """`:embedContent` (one `content`) and `:batchEmbedContents` (`requests`, each naming the
    model as `models/{model}`): `{"embedding": {"values"}}` or `{"embeddings": [...]}`, with
    `outputDimensionality`; no token counts (https://ai.google.dev/api/embeddings)."""

    def _requests(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return list(body.get("requests") or ()) if self.method == "batchEmbedContents" else [body]

    def validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise _invalid("Invalid JSON payload received. Expected an object.")
        requests = self._requests(body)
        if not requests:
            raise _invalid("* BatchEmbedContentsRequest.requests: requests is not specified\n")
        for i, one in enumerate(requests):
            model = one.get("model") if self.method == "batchEmbedContents" else None
            if model is not None and model != f"models/{self.model}":
                raise _invalid(
                    f"* BatchEmbedContentsRequest.requests[{i}].model: the model must be the "
                    f"one of the request, models/{self.model}\n"
                )
            if not _text(field(one, "content") and field(one, "content").get("parts")):
                raise _invalid("* EmbedContentRequest.content: contents is not specified\n")

    def wants_stream(self, body: Any) -> bool:
        return False

    def plan(self, body: Any) -> ReplyPlan:
        return ReplyPlan(None, (), "stop", 0, 0)

    def _vector(self, one: dict[str, Any]) -> list[float]:
        size = field(one, "outputDimensionality")
        return embedding(self.model, _text(one["content"]["parts"]), size or None)

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        vectors = [{"values": self._vector(one)} for one in self._requests(body)]
        if self.method == "embedContent":
            return orjson.dumps({"embedding": vectors[0]})
        return orjson.dumps({"embeddings": vectors})


class VertexPredict(GeminiEmbed):
    """Vertex's `:predict` for text embeddings: `instances` of `{"content"}` and
    `parameters.outputDimensionality`; each prediction's `embeddings` has its `values` and
    `statistics` (`token_count`, `truncated`)."""

    def validate(self, body: Any) -> None:
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, list) or not instances:
            raise _invalid("instances must be a non-empty list")
        for instance in instances:
            if not isinstance(instance, dict) or not isinstance(instance.get("content"), str):
                raise _invalid("each instance needs its content")

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        size = field(body.get("parameters") or {}, "outputDimensionality")
        predictions = [
            {
                "embeddings": {
                    "values": embedding(self.model, instance["content"], size or None),
                    "statistics": {
                        "token_count": count_words(instance["content"]),
                        "truncated": False,
                    },
                }
            }
            for instance in body["instances"]
        ]
        return orjson.dumps({"predictions": predictions, "metadata": {"billableCharacterCount": 0}})


class VertexClaude(AnthropicFormat):
    """Claude on Vertex: the Messages API's body, model in the URL, `anthropic_version` in
    the body, an OAuth bearer token."""

    def __init__(self, credentials: IssuedCredentials, model: str, cache: PromptCache) -> None:
        super().__init__(cache)
        self.credentials = credentials
        self.model = model

    def check_headers(self, headers: Mapping[str, str]) -> ApiError | None:
        return None  # the version is in the body

    def check_auth(self, headers: Mapping[str, str], api_key: str) -> ApiError | None:
        if self.credentials.bearer_problem(headers) is None:
            return None
        return ApiError(401, "Request had invalid authentication credentials.")

    def _with_model(self, body: Any) -> Any:
        return {**body, "model": self.model} if isinstance(body, dict) else body

    def validate(self, body: Any) -> None:
        if isinstance(body, dict):
            if "model" in body:
                raise ApiError(400, "model: Extra inputs are not permitted")
            if not body.get("anthropic_version"):
                raise ApiError(400, "anthropic_version: Field required")
        super().validate(self._with_model(body))

    def model_of(self, body: Any) -> str | None:
        return self.model

    def plan(self, body: Any) -> ReplyPlan:
        return super().plan(self._with_model(body))

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        return super().unary_body(self._with_model(body), plan)

    def stream_events(self, body: Any, plan: ReplyPlan) -> list[StreamEvent]:
        return super().stream_events(self._with_model(body), plan)

    def error_event(self, error: ApiError) -> bytes:
        """Anthropic's `error` event, as a stream reports a failure after the 200."""
        return b"event: error\ndata: " + self.error_body(error) + b"\n\n"


def field(message: Any, name: str) -> Any:
    """A field of a proto-JSON object: the API reads lowerCamelCase and snake_case alike."""
    if not isinstance(message, dict):
        return None
    if name in message:
        return message[name]
    return message.get(re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower())


def _response_id() -> str:
    return f"sim{_ID_PREFIX}{next(_ids):010x}"


def finish_reason(plan: ReplyPlan) -> str:
    if plan.finish_reason == "content_filter":
        return "SAFETY"
    return _FINISH.get(plan.finish_reason, "STOP")


def check_schema(schema: Any, where: str) -> None:
    """400 for what the Schema message cannot hold, worded as the API words it."""
    if not isinstance(schema, dict):
        raise _invalid(f"Invalid JSON payload received. Expected an object at '{where}'.")
    for name, value in schema.items():
        if name not in SCHEMA_KEYWORDS:
            raise _invalid(
                f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': "
                f"Cannot find field."
            )
        if name == "type" and (not isinstance(value, str) or value.upper() not in TYPES):
            raise _invalid(
                f"Invalid value at '{where}.type' (type.googleapis.com/google.ai."
                f"generativelanguage.v1beta.Type), {orjson.dumps(value).decode()}"
            )
        if name == "properties" and isinstance(value, dict):
            for prop, sub in value.items():
                check_schema(sub, f"{where}.properties[{prop}].value")
        elif name == "items":
            check_schema(value, f"{where}.items")
        elif name == "anyOf" and isinstance(value, list):
            for i, sub in enumerate(value):
                check_schema(sub, f"{where}.any_of[{i}]")
        elif name == "enum" and not (
            isinstance(value, list) and all(isinstance(item, str) for item in value)
        ):
            raise _invalid(f"Invalid value at '{where}.enum': enum values must be strings")
    if str(schema.get("type", "")).upper() == "ARRAY" and "items" not in schema:
        raise _invalid(f"* GenerateContentRequest.{where}.items: missing field.\n")


# -- the planner's view of a generateContent request -----------------------------------------


def to_planner(body: dict[str, Any]) -> dict[str, Any]:
    """The same conversation in OpenAI's chat-completions shape, for `plan_reply`."""
    messages: list[dict[str, Any]] = []
    system = field(body, "systemInstruction")
    if isinstance(system, dict):
        messages.append({"role": "system", "content": _text(system.get("parts"))})
    for content in body.get("contents") or ():
        messages += _split(content)
    request: dict[str, Any] = {"messages": messages}
    config = field(body, "generationConfig") or {}
    if field(config, "maxOutputTokens"):
        request["max_tokens"] = field(config, "maxOutputTokens")
    if field(config, "stopSequences"):
        request["stop"] = field(config, "stopSequences")
    functions = [
        declaration
        for tool in body.get("tools") or ()
        for declaration in field(tool, "functionDeclarations") or ()
    ]
    if functions:
        request["tools"] = [_function_tool(declaration) for declaration in functions]
    thinking = field(config, "thinkingConfig") or {}
    budget = field(thinking, "thinkingBudget")
    if isinstance(budget, int) and budget != 0:
        request["reasoning"] = effort_of_budget(budget) if budget > 0 else "medium"
    calling = field(field(body, "toolConfig"), "functionCallingConfig") or {}
    allowed: list[str] = field(calling, "allowedFunctionNames") or []
    if calling.get("mode") == "NONE":
        request["tool_choice"] = "none"
    elif calling.get("mode") == "ANY" and len(allowed) == 1:
        name = allowed[0]
        request["tool_choice"] = {"type": "function", "function": {"name": name}}
    return request


def _text(parts: Any) -> str:
    return " ".join(
        part["text"]
        for part in parts or ()
        if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought")
    )


def _split(content: dict[str, Any]) -> list[dict[str, Any]]:
    """One content as the OpenAI messages it stands for (function responses are their own)."""
    role = "assistant" if content.get("role") == "model" else "user"
    out: list[dict[str, Any]] = []
    calls = []
    media = [
        _as_openai_part(field(part, "inlineData"))
        for part in content.get("parts") or ()
        if field(part, "inlineData") is not None
    ]
    for part in content.get("parts") or ():
        if field(part, "functionResponse") is not None:
            response = field(part, "functionResponse").get("response")
            out.append({"role": "tool", "content": _response_text(response)})
        elif field(part, "functionCall") is not None:
            call = field(part, "functionCall")
            arguments = orjson.dumps(call.get("args") or {}).decode()
            calls.append(
                {"type": "function", "function": {"name": call.get("name"), "arguments": arguments}}
            )
    text = _text(content.get("parts"))
    if text or calls or media:
        said: Any = text
        if media:  # text and media as OpenAI's parts, for the planner's description
            said = ([{"type": "text", "text": text}] if text else []) + media
        message: dict[str, Any] = {"role": role, "content": said}
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


def _as_openai_part(inline: dict[str, Any]) -> dict[str, Any]:
    """Inline data as the planner's (OpenAI's) part, for its description."""
    mime, data = str(field(inline, "mimeType")), str(inline.get("data"))
    if mime.startswith("image/"):
        return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}
    if mime.startswith("audio/"):
        return {"type": "input_audio", "input_audio": {"data": data, "format": mime[6:]}}
    return {"type": "file", "file": {"file_data": f"data:{mime};base64,{data}"}}


def _check_inline(inline: Any) -> None:
    if inline is None:
        return
    mime = field(inline, "mimeType")
    if mime not in INLINE_TYPES:
        raise _invalid(f"Unsupported MIME type: {mime}")
    try:
        base64.b64decode(str(inline.get("data")), validate=True)
    except binascii.Error:
        raise _invalid(
            "Invalid value at 'inline_data.data' (TYPE_BYTES), Base64 decoding failed"
        ) from None


# -- thoughts and their signatures -----------------------------------------------------------


def _thinking_on(body: dict[str, Any]) -> tuple[bool, bool]:
    """(reasoning on, thought summaries asked for) of a request."""
    thinking = field(field(body, "generationConfig"), "thinkingConfig") or {}
    budget = field(thinking, "thinkingBudget")
    on = isinstance(budget, int) and budget != 0
    return on, on and field(thinking, "includeThoughts") is True


def call_signature(name: Any, args: Any) -> str:
    """The signature the simulated model puts on a function call it made with thinking on."""
    return sign(f"functionCall\0{name}\0{orjson.dumps(args or {}).decode()}")


def _thought_parts(body: dict[str, Any], plan: ReplyPlan) -> list[dict[str, Any]]:
    """The thought summary (when asked for), signed."""
    on, summaries = _thinking_on(body)
    if not (on and summaries and plan.reasoning):
        return []
    return [{"text": plan.reasoning, "thought": True, "thoughtSignature": sign(plan.reasoning)}]


def _answer_parts(body: dict[str, Any], plan: ReplyPlan) -> list[dict[str, Any]]:
    """The answer's parts; with thinking on the first function call (else the text) carries
    a signature, as Gemini 3 answers."""
    on, _ = _thinking_on(body)
    parts: list[dict[str, Any]] = []
    if plan.text:
        parts.append({"text": plan.text})
    for call in plan.tool_calls:
        args = orjson.loads(call.arguments)
        parts.append({"functionCall": {"name": call.name, "args": args}})
    if on and parts:
        first = parts[-len(plan.tool_calls)] if plan.tool_calls else parts[0]
        if "functionCall" in first:
            call = first["functionCall"]
            first["thoughtSignature"] = call_signature(call["name"], call["args"])
        else:
            first["thoughtSignature"] = sign(first["text"])
    return parts


def _check_signatures(body: dict[str, Any]) -> None:
    """With thinking on, the function calls of the turn being answered must come back with
    the signature the model gave the first of them; any signature sent must be one it made."""
    contents = body.get("contents") or []
    for content in contents:
        for part in content.get("parts") or ():
            signature = field(part, "thoughtSignature")
            if signature is None:
                continue
            call = field(part, "functionCall")
            made = (
                call_signature(call.get("name"), call.get("args"))
                if call is not None
                else sign(str(part.get("text")))
            )
            if signature != made:
                raise _invalid("Corrupted thought signature.")
    if not _thinking_on(body)[0] or not contents or contents[-1].get("role") != "user":
        return
    answered = contents[-1].get("parts") or []
    if not any(field(p, "functionResponse") is not None for p in answered):
        return
    model_turn = contents[-2] if len(contents) > 1 else {}
    calls = [p for p in model_turn.get("parts") or () if field(p, "functionCall") is not None]
    if calls and field(calls[0], "thoughtSignature") is None:
        raise _invalid(
            "Function call is missing a thought_signature in functionCall parts. This is "
            "required for tools to work correctly, and missing thought_signature may lead to "
            "degraded model performance."
        )


def _response_text(response: Any) -> str:
    if (
        isinstance(response, dict)
        and set(response) == {"result"}
        and isinstance(response["result"], str)
    ):
        return response["result"]
    return orjson.dumps(response).decode()


def _function_tool(declaration: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": declaration.get("name")}
    if "description" in declaration:
        function["description"] = declaration["description"]
    if "parameters" in declaration:
        function["parameters"] = _lower_types(declaration["parameters"])
    elif field(declaration, "parametersJsonSchema") is not None:
        function["parameters"] = field(declaration, "parametersJsonSchema")
    return {"type": "function", "function": function}


def _lower_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: value.lower() if key == "type" and isinstance(value, str) else _lower_types(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_lower_types(item) for item in schema]
    return schema
