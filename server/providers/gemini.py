"""The Gemini API adapter: `generateContent` and `streamGenerateContent?alt=sse`.

`base_url` is the API's origin, https://generativelanguage.googleapis.com; the adapter
appends `/{api_version}/models/{model}:{method}`. Follows Google's references:

- https://ai.google.dev/api/generate-content (request: `contents` of `role` `user` or
  `model` with `parts`, `systemInstruction`, `tools[].functionDeclarations`, `toolConfig`,
  `generationConfig`; answer: `candidates[].content.parts`, `finishReason`,
  `promptFeedback`, `usageMetadata`; the stream: one `GenerateContentResponse` per SSE
  `data:` line, deltas, and no end marker)
- https://ai.google.dev/gemini-api/docs/function-calling (a function call comes whole,
  with `args` as an object and no id; its result goes back as a `functionResponse` part
  with the function's `name` and a `response` object, in a `user` turn)
- https://ai.google.dev/api/caching#Schema (the schema subset: gemini_schema.py)
- https://ai.google.dev/gemini-api/docs/troubleshooting (errors: `{"error": {"code",
  "message", "status", "details"}}`; a bad key is 400 with reason `API_KEY_INVALID`; 429
  carries a `RetryInfo` `retryDelay`)
- auth: `x-goog-api-key` (https://ai.google.dev/gemini-api/docs/api-key)

What the service's request carries that the API has no field for: `user` and `name` are
dropped; system messages (anywhere) become `systemInstruction`; consecutive turns of one
role are merged (parallel function responses belong in one turn). Function calls get ids
here (`call_` + random hex), since the API sends none; a tool result names its call by
that id, and the adapter sends the function's name instead, found in the conversation.
A tool result that is a JSON object is the `response`; any other text is
`{"result": text}`. A stream ends properly only with a `finishReason` before the body
ends; the last chunk (finish reason and the final usage) goes out at the end of the body.
Safety stops (`SAFETY`, `RECITATION`, `BLOCKLIST`, …, a prompt blocked by
`promptFeedback.blockReason`) end with `content_filter`; a malformed function call is
UNAVAILABLE, as the model failed, and may be retried.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any
from urllib.parse import quote

import orjson

from ai_service.config import ProviderSettings
from ai_service.errors import (
    InvalidRequest,
    UpstreamAuth,
    UpstreamError,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from ai_service.providers.base import Deployment, parse_json_body
from ai_service.providers.credentials import Credentials
from ai_service.providers.endpoint import UpstreamEndpoint
from ai_service.providers.framing import iter_sse_batches
from ai_service.providers.gemini_schema import gemini_schema
from ai_service.providers.http import HttpClient, UpstreamResponse
from ai_service.providers.status_mapping import error_from_status
from ai_service.providers.translation import (
    arguments_object,
    arguments_text,
    coalesce,
    finish_chunk,
    function_parameters,
    new_id,
    text_chunk,
    tool_choice_of,
    translate_failure,
)
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Message,
    ToolCall,
    Usage,
)

#: Gemini takes at most five stop sequences (GenerationConfig.stopSequences).
MAX_STOP_SEQUENCES = 5
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}
#: Finish reasons that say the model failed to produce a usable answer.
FAILED_FINISH_REASONS = frozenset(
    {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS", "MALFORMED_RESPONSE"}
)
#: ErrorInfo reasons that are the gateway's credentials, whatever the status says.
CREDENTIAL_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "ACCESS_TOKEN_EXPIRED"})
_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_GENERATION_FIELDS = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
    ("max_tokens", "maxOutputTokens"),
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)s")


class GeminiProvider:
    kind = "gemini"
    refuses_requests = True

    def __init__(self, settings: ProviderSettings, http: HttpClient | None = None) -> None:
        self.name = settings.name
        self._models_url = self._models(settings)
        self._endpoint = UpstreamEndpoint(
            settings,
            "",
            stream_accept="text/event-stream",
            credentials=lambda key: {"x-goog-api-key": key},
            auth=self._auth(settings),
            map_error=error_from_response,
            http=http,
        )

    def _models(self, settings: ProviderSettings) -> str:
        """The URL the model and method are appended to."""
        version = settings.gemini.api_version if settings.gemini is not None else "v1beta"
        return f"{settings.base_url.rstrip('/')}/{version}/models/"

    def _auth(self, settings: ProviderSettings) -> Credentials | None:
        return None  # the key, as `x-goog-api-key`

    def _url(self, deployment: Deployment, method: str) -> str:
        return f"{self._models_url}{quote(deployment.upstream_model, safe='')}:{method}"

    async def complete(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,  # the API needs none
    ) -> ChatCompletionResponse:
        body = orjson.dumps(request_body(request))
        url = self._url(deployment, "generateContent")
        payload = await self._endpoint.fetch(body, "a generateContent answer", url)
        return translate_failure(response_from_gemini, payload, deployment.upstream_model)

    async def stream(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,  # the API needs none
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        body = orjson.dumps(request_body(request))
        url = self._url(deployment, "streamGenerateContent") + "?alt=sse"
        async with self._endpoint.stream(body, url) as response:
            translator = StreamTranslator(self.name, deployment.upstream_model)
            async for events in iter_sse_batches(response.iter_bytes()):
                ready: list[ChatCompletionChunk] = []
                for event in events:
                    payload = parse_json_body(event.data, "a stream event")
                    ready += translate_failure(translator.feed, payload)
                for chunk in coalesce(ready):
                    yield chunk
        yield translator.last_chunk()

    def refusal(self, request: ChatCompletionRequest) -> InvalidRequest | None:
        try:
            request_body(request)
        except InvalidRequest as refused:
            return refused
        return None

    async def aclose(self) -> None:
        await self._endpoint.aclose()


# --- request: proto → Gemini JSON ---------------------------------------------------


def request_body(request: ChatCompletionRequest) -> dict[str, Any]:
    """The generateContent body; InvalidRequest naming the field for what Gemini cannot take."""
    if len(request.stop) > MAX_STOP_SEQUENCES:
        raise InvalidRequest("stop", f"Gemini takes at most {MAX_STOP_SEQUENCES} stop sequences")
    system, contents = contents_from(request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    if request.tools:
        body["tools"] = [
            {"functionDeclarations": [declaration(request, i) for i in range(len(request.tools))]}
        ]
    choice = tool_choice_of(request)
    if choice is not None:
        which, value = choice
        calling: dict[str, Any] = {"mode": "ANY" if which == "function" else _TOOL_MODES[value]}
        if which == "function":
            calling["allowedFunctionNames"] = [value]
        body["toolConfig"] = {"functionCallingConfig": calling}
    config: dict[str, Any] = {
        wire: getattr(request, field)
        for field, wire in _GENERATION_FIELDS
        if request.HasField(field)
    }
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.HasField("response_format") and request.response_format.type not in ("", "text"):
        config["responseMimeType"] = "application/json"
        fmt = request.response_format
        if fmt.type == "json_schema" and fmt.json_schema:
            config["responseSchema"] = gemini_schema(
                orjson.loads(fmt.json_schema), "response_format.json_schema"
            )
    if config:
        body["generationConfig"] = config
    return body


def contents_from(messages: Sequence[Message]) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, contents): turns of one role merged, tool results named by function."""
    names: dict[str, str] = {}  # tool call id → function name
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role == "system":
            system.append(message.content)
            continue
        if message.role == "tool":
            name = names.get(message.tool_call_id)
            if name is None:
                raise InvalidRequest(
                    f"messages[{i}].tool_call_id",
                    f"{message.tool_call_id!r} answers no tool call of an earlier assistant "
                    f"message; Gemini needs the function's name",
                )
            role = "user"
            parts: list[dict[str, Any]] = [
                {"functionResponse": {"name": name, "response": tool_response(message)}}
            ]
        elif message.role == "assistant":
            role = "model"
            parts = [{"text": message.content}] if message.content else []
            for call in message.tool_calls:
                parts.append(
                    {"functionCall": {"name": call.function.name, "args": arguments_object(call)}}
                )
                names[call.id] = call.function.name
        else:
            role = "user"
            parts = [{"text": message.content}]
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def tool_response(message: Message) -> dict[str, Any]:
    """A tool result as the object `functionResponse.response` must be."""
    try:
        value = orjson.loads(message.content)
    except orjson.JSONDecodeError:
        return {"result": message.content}
    return value if isinstance(value, dict) else {"result": message.content}


def declaration(request: ChatCompletionRequest, index: int) -> dict[str, Any]:
    function = request.tools[index].function
    out: dict[str, Any] = {"name": function.name}
    if function.description:
        out["description"] = function.description
    parameters = function_parameters(function)
    if parameters is not None:
        out["parameters"] = gemini_schema(parameters, f"tools[{index}].function.parameters")
    return out


# --- response: Gemini JSON → proto ---------------------------------------------------


def finish_reason(value: Any, called_tools: bool) -> str:
    """The service's finish reason for a candidate's `finishReason`."""
    if value in FAILED_FINISH_REASONS:
        raise UpstreamUnavailable(f"the model failed to answer (finishReason {value})")
    if value == "MISSING_THOUGHT_SIGNATURE":
        raise UpstreamInvalidRequest(
            "the conversation lacks the thought signature of an earlier function call"
        )
    reason = FINISH_REASONS.get(value, "stop") if isinstance(value, str) else "stop"
    return "tool_calls" if called_tools and reason == "stop" else reason


def tool_call_from_gemini(call: dict[str, Any]) -> ToolCall:
    tool_call = ToolCall(id=call.get("id") or new_id("call_"), type="function")
    tool_call.function.name = call["name"]
    tool_call.function.arguments = arguments_text(call.get("args"))
    return tool_call


def response_from_gemini(payload: dict[str, Any], model: str) -> ChatCompletionResponse:
    response = ChatCompletionResponse(
        id=payload.get("responseId") or new_id("gemini-"),
        model=payload.get("modelVersion") or model,
    )
    choice = response.choices.add(index=0)
    choice.message.role = "assistant"
    candidates = payload.get("candidates") or []
    if not candidates:
        if not (payload.get("promptFeedback") or {}).get("blockReason"):
            raise ValueError("no candidates and no promptFeedback.blockReason")
        choice.finish_reason = "content_filter"  # the prompt itself was blocked
    else:
        candidate = candidates[0]
        for part in (candidate.get("content") or {}).get("parts") or ():
            if part.get("thought"):
                continue  # reasoning summaries have no place in the service's message
            if "text" in part:
                choice.message.content += part["text"]
            elif "functionCall" in part:
                choice.message.tool_calls.append(tool_call_from_gemini(part["functionCall"]))
        choice.finish_reason = finish_reason(
            candidate.get("finishReason"), bool(choice.message.tool_calls)
        )
    usage_into(response.usage, payload.get("usageMetadata"))
    return response


def usage_into(usage: Usage, metadata: dict[str, Any] | None) -> None:
    """Gemini's counts: thoughts count as completion tokens (as OpenAI counts reasoning),
    the tool-use prompt as prompt tokens; absent counts are zero (proto3 JSON)."""
    if not metadata:
        return
    usage.prompt_tokens = int(metadata.get("promptTokenCount") or 0) + int(
        metadata.get("toolUsePromptTokenCount") or 0
    )
    usage.completion_tokens = int(metadata.get("candidatesTokenCount") or 0) + int(
        metadata.get("thoughtsTokenCount") or 0
    )
    usage.total_tokens = int(
        metadata.get("totalTokenCount") or usage.prompt_tokens + usage.completion_tokens
    )


class StreamTranslator:
    """Gemini stream responses → chunks; the last chunk waits for the end of the body."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.template = ChatCompletionChunk(model=model)
        self.started = False
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.tool_calls = 0

    def feed(self, payload: dict[str, Any]) -> list[ChatCompletionChunk]:
        if "error" in payload:
            raise stream_error(self.provider, payload)
        chunks = []
        if not self.started:
            self.started = True
            self.template.id = payload.get("responseId") or new_id("gemini-")
            self.template.model = payload.get("modelVersion") or self.template.model
            chunks.append(text_chunk(self.template, "", role="assistant"))
        if payload.get("usageMetadata"):
            self.usage = payload["usageMetadata"]  # cumulative: the last one counts
        candidates = payload.get("candidates") or []
        if not candidates:
            if (payload.get("promptFeedback") or {}).get("blockReason"):
                self.finish = "content_filter"
            return chunks
        candidate = candidates[0]
        for part in (candidate.get("content") or {}).get("parts") or ():
            if part.get("thought"):
                continue
            if part.get("text"):
                chunks.append(text_chunk(self.template, part["text"]))
            elif "functionCall" in part:
                call = tool_call_from_gemini(part["functionCall"])
                chunk = text_chunk(self.template, "")
                piece = chunk.choices[0].delta.tool_calls.add(
                    index=self.tool_calls, id=call.id, type="function"
                )
                piece.function.CopyFrom(call.function)
                self.tool_calls += 1
                chunks.append(chunk)
        if candidate.get("finishReason"):
            self.finish = finish_reason(candidate["finishReason"], self.tool_calls > 0)
        return chunks

    def last_chunk(self) -> ChatCompletionChunk:
        """The finish reason and usage, once the body has ended."""
        if self.finish is None:
            raise UpstreamUnavailable(
                f"upstream {self.provider!r} ended the stream without a finishReason"
            )
        usage = Usage()
        usage_into(usage, self.usage)
        return finish_chunk(
            self.template, self.finish, usage.prompt_tokens, usage.completion_tokens
        )


# --- errors ---------------------------------------------------------------------------------


def error_details(body: bytes) -> tuple[set[str], float | None]:
    """(ErrorInfo reasons, RetryInfo delay in seconds) of a google.rpc.Status error body."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return set(), None
    error = payload.get("error") if isinstance(payload, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    reasons: set[str] = set()
    delay = None
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        if isinstance(detail.get("reason"), str):
            reasons.add(detail["reason"])
        match = _DURATION.fullmatch(str(detail.get("retryDelay", "")))
        if match:
            delay = float(match[1])
    return reasons, delay


def error_from_response(response: UpstreamResponse, body: bytes, provider: str) -> UpstreamError:
    """By status; a refused key is the gateway's credential (Gemini says 400), and a 429's
    wait may come as a RetryInfo in the body rather than a header."""
    reasons, delay = error_details(body)
    if reasons & CREDENTIAL_REASONS:
        return UpstreamAuth(f"upstream {provider!r} refused the gateway's credentials")
    error = error_from_status(
        response.status, body, retry_after=response.header("retry-after"), provider=provider
    )
    if isinstance(error, UpstreamRateLimited) and error.retry_after is None:
        error.retry_after = delay
    return error


def stream_error(provider: str, payload: dict[str, Any]) -> UpstreamError:
    """An error object after the 200, classified as if it had come with its status."""
    error = payload.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    return error_from_status(status, orjson.dumps(payload), retry_after=None, provider=provider)
