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

Content (https://ai.google.dev/gemini-api/docs/vision, .../document-processing, .../audio,
.../thinking, .../thought-signatures, https://ai.google.dev/api/embeddings): images (PNG,
JPEG, WebP), documents and audio go inline (`inlineData` with their media type), a URL
part fetched first; a GIF and an image `detail` are refused. The reasoning setting is
`thinkingConfig` (`thinkingBudget`: an effort as 1024/4096/16384, off as 0;
`includeThoughts`). Thought parts come back as reasoning blocks with their
`thoughtSignature`, a signature on an answer part as a block of its own; they go back as
thought parts, and a loose signature on the first function call (else the text), where
Gemini 3 checks it. `thoughtsTokenCount` is the reasoning tokens (counted in the
completion), `cachedContentTokenCount` the cached tokens. Embeddings are
`:batchEmbedContents` (Vertex: `:predict`, vertex.py).
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
from ai_service.providers.base import Deployment, parse_json_body, request_json
from ai_service.providers.content import b64, budget_of, is_off, reasoning_of, reasoning_on
from ai_service.providers.credentials import Credentials
from ai_service.providers.embeddings import complete, embedding_from, wants_bytes
from ai_service.providers.endpoint import UpstreamEndpoint
from ai_service.providers.framing import iter_sse_batches
from ai_service.providers.gemini_schema import gemini_schema
from ai_service.providers.http import HttpClient, UpstreamResponse
from ai_service.providers.http.fetch import MediaFetcher
from ai_service.providers.media import with_bytes
from ai_service.providers.status_mapping import error_from_status
from ai_service.providers.translation import (
    SYSTEM_ROLES,
    arguments_object,
    arguments_text,
    coalesce,
    finish_chunk,
    function_parameters,
    hide_reasoning_text,
    keeps_reasoning_text,
    new_id,
    text_chunk,
    tool_choice_of,
    translate_failure,
)
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ContentPart,
    EmbedRequest,
    EmbedResponse,
    Message,
    ReasoningBlock,
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
    carries = frozenset({"vision", "documents", "audio_input", "reasoning", "tools", "embeddings"})

    def __init__(
        self,
        settings: ProviderSettings,
        http: HttpClient | None = None,
        media: MediaFetcher | None = None,
    ) -> None:
        self.name = settings.name
        self._media = media or MediaFetcher()
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

    async def _body(self, request: ChatCompletionRequest) -> bytes:
        # Media go inline: `fileData` takes only the Files API's (or Cloud Storage) URIs.
        request = await with_bytes(request, _any_url, self._media)
        return request_json(request_body(request))

    async def complete(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,  # the API needs none
    ) -> ChatCompletionResponse:
        body = await self._body(request)
        url = self._url(deployment, "generateContent")
        payload = await self._endpoint.fetch(body, "a generateContent answer", url)
        response = translate_failure(response_from_gemini, payload, deployment.upstream_model)
        if not keeps_reasoning_text(request):
            hide_reasoning_text(response)
        return response

    async def stream(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,  # the API needs none
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        body = await self._body(request)
        url = self._url(deployment, "streamGenerateContent") + "?alt=sse"
        async with self._endpoint.stream(body, url) as response:
            translator = StreamTranslator(
                self.name, deployment.upstream_model, keeps_reasoning_text(request)
            )
            async for events in iter_sse_batches(response.iter_bytes()):
                ready: list[ChatCompletionChunk] = []
                for event in events:
                    payload = parse_json_body(event.data, "a stream event")
                    ready += translate_failure(translator.feed, payload)
                for chunk in coalesce(ready):
                    yield chunk
        yield translator.last_chunk()

    def refusal(self, request: ChatCompletionRequest) -> InvalidRequest | None:
        return request_refusal(request)

    async def embed(self, request: EmbedRequest, deployment: Deployment) -> EmbedResponse:
        body = orjson.dumps(self._embed_body(request, deployment))
        url = self._url(deployment, self._embed_method)
        payload = await self._endpoint.fetch(body, "embeddings", url)
        return translate_failure(self._embeddings_from, payload, request, deployment, self.name)

    _embed_method = "batchEmbedContents"

    def _embed_body(self, request: EmbedRequest, deployment: Deployment) -> dict[str, Any]:
        """batchEmbedContents: one request per input, each naming the model."""
        model = f"models/{deployment.upstream_model}"
        requests = []
        for text in request.inputs:
            one: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
            if request.HasField("dimensions"):
                one["outputDimensionality"] = request.dimensions
            requests.append(one)
        return {"requests": requests}

    @staticmethod
    def _embeddings_from(
        payload: dict[str, Any], request: EmbedRequest, deployment: Deployment, provider: str
    ) -> EmbedResponse:
        # The Gemini API reports no token counts for embeddings: usage stays 0.
        response = EmbedResponse(model=deployment.upstream_model)
        as_bytes = wants_bytes(request)
        embeddings = [
            embedding_from(i, item["values"], as_bytes)
            for i, item in enumerate(payload["embeddings"])
        ]
        return complete(response, embeddings, len(request.inputs), provider)

    async def aclose(self) -> None:
        await self._endpoint.aclose()


def _any_url(part: ContentPart) -> bool:
    return True


# --- request: proto → Gemini JSON ---------------------------------------------------


def request_refusal(request: ChatCompletionRequest) -> InvalidRequest | None:
    """What Gemini cannot take, refused before a call, naming the field."""
    try:
        _check(request)
    except InvalidRequest as refused:
        return refused
    return None


def _check(request: ChatCompletionRequest) -> None:
    if len(request.stop) > MAX_STOP_SEQUENCES:
        raise InvalidRequest("stop", f"Gemini takes at most {MAX_STOP_SEQUENCES} stop sequences")
    _function_names(request.messages)  # every tool result names an earlier call
    for i in range(len(request.tools)):
        declaration(request, i)
    _response_schema(request)
    for i, message in enumerate(request.messages):
        for j, part in enumerate(message.parts):
            if part.WhichOneof("kind") != "image":
                continue
            if part.image.detail not in ("", "auto"):
                raise InvalidRequest(
                    f"messages[{i}].parts[{j}].image.detail", "Gemini takes no detail setting"
                )
            if part.image.media_type == "image/gif":
                raise InvalidRequest(
                    f"messages[{i}].parts[{j}].image.media_type",
                    "Gemini takes PNG, JPEG and WebP images, not GIF",
                )
        for j, block in enumerate(message.reasoning):
            if block.redacted_data:
                raise InvalidRequest(
                    f"messages[{i}].reasoning[{j}].redacted_data",
                    "is another provider's redacted reasoning; Gemini cannot take it back",
                )


def request_body(request: ChatCompletionRequest) -> dict[str, Any]:
    """The generateContent body; InvalidRequest naming the field for what Gemini cannot take."""
    _check(request)
    system, contents = contents_from(request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
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
        schema = _response_schema(request)
        if schema is not None:
            config["responseSchema"] = schema
    thinking = thinking_config(request)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if config:
        body["generationConfig"] = config
    return body


def _response_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    fmt = request.response_format
    if not request.HasField("response_format") or fmt.type != "json_schema" or not fmt.json_schema:
        return None
    return gemini_schema(orjson.loads(fmt.json_schema), "response_format.json_schema")


def thinking_config(request: ChatCompletionRequest) -> dict[str, Any] | None:
    """The reasoning setting as `thinkingConfig`: a budget (an effort mapped to 1024, 4096
    or 16384 tokens, as for Anthropic), 0 for off, and whether thoughts come back."""
    setting = reasoning_of(request)
    if setting is None:
        return None
    config: dict[str, Any] = {}
    if is_off(setting):
        config["thinkingBudget"] = 0
    else:
        budget = budget_of(setting)
        if budget is not None:
            config["thinkingBudget"] = budget
    if setting.HasField("include_text"):
        config["includeThoughts"] = setting.include_text
    elif reasoning_on(request):
        config["includeThoughts"] = True  # the reasoning text is asked for by default
    return config or None


def _function_names(messages: Sequence[Message]) -> dict[int, str]:
    """The function each tool result answers (Gemini names it), by message index."""
    calls: dict[str, str] = {}
    answered: dict[int, str] = {}
    for i, message in enumerate(messages):
        for call in message.tool_calls:
            calls[call.id] = call.function.name
        if message.role == "tool":
            name = calls.get(message.tool_call_id)
            if name is None:
                raise InvalidRequest(
                    f"messages[{i}].tool_call_id",
                    f"{message.tool_call_id!r} answers no tool call of an earlier assistant "
                    f"message; Gemini needs the function's name",
                )
            answered[i] = name
    return answered


def contents_from(
    messages: Sequence[Message],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system instruction parts, contents): turns of one role merged, tool results named
    by function."""
    names = _function_names(messages)
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role in SYSTEM_ROLES:
            system += user_parts(message)
            continue
        if message.role == "tool":
            role = "user"
            response = {"name": names[i], "response": tool_response(message)}
            parts: list[dict[str, Any]] = [{"functionResponse": response}]
        elif message.role == "assistant":
            role, parts = "model", model_parts(message)
        else:
            role, parts = "user", user_parts(message)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def user_parts(message: Message) -> list[dict[str, Any]]:
    """The message's content, then its parts: text, and media inline with their type."""
    parts: list[dict[str, Any]] = []
    if message.content or not message.parts:
        parts.append({"text": message.content})
    for part in message.parts:
        kind = part.WhichOneof("kind")
        if kind == "text":
            parts.append({"text": part.text})
        elif kind == "image":
            parts.append(_inline(part.image.media_type, part.image.data))
        elif kind == "document":
            parts.append(_inline(part.document.media_type, part.document.data))
        elif kind == "audio":
            parts.append(_inline(f"audio/{part.audio.format}", part.audio.data))
    return parts


def _inline(media_type: str, data: bytes) -> dict[str, Any]:
    return {"inlineData": {"mimeType": media_type, "data": b64(data)}}


def model_parts(message: Message) -> list[dict[str, Any]]:
    """An assistant turn as Gemini sent it: its thoughts (with their signatures), its text,
    its function calls. A signature that came on a text or function-call part goes back
    on the first function call, else on the text, as Gemini checks it there."""
    parts: list[dict[str, Any]] = []
    loose: list[str] = []  # signatures of parts that were not thoughts
    for block in message.reasoning:
        if block.text:
            thought: dict[str, Any] = {"text": block.text, "thought": True}
            if block.signature:
                thought["thoughtSignature"] = block.signature
            parts.append(thought)
        elif block.signature:
            loose.append(block.signature)
    answer: list[dict[str, Any]] = [{"text": message.content}] if message.content else []
    calls: list[dict[str, Any]] = [
        {"functionCall": {"name": call.function.name, "args": arguments_object(call)}}
        for call in message.tool_calls
    ]
    for part, signature in zip(calls or answer, loose, strict=False):
        part["thoughtSignature"] = signature
    return parts + answer + calls


def tool_response(message: Message) -> dict[str, Any]:
    """A tool result as the object `functionResponse.response` must be."""
    text = message.content + "".join(
        p.text for p in message.parts if p.WhichOneof("kind") == "text"
    )
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": text}


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
            signature = part.get("thoughtSignature") or ""
            if part.get("thought"):
                block = ReasoningBlock(text=part.get("text") or "", signature=signature)
                choice.message.reasoning.append(block)
                continue
            if signature:  # a signature on an answer part: kept, to go back next turn
                choice.message.reasoning.append(ReasoningBlock(signature=signature))
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
    """Gemini's counts: thoughts count as completion tokens (as OpenAI counts reasoning), and
    are its reasoning tokens; the tool-use prompt counts as prompt tokens; tokens read from
    the (implicit or explicit) context cache are its cached tokens; absent counts are zero
    (proto3 JSON)."""
    if not metadata:
        return
    thoughts = int(metadata.get("thoughtsTokenCount") or 0)
    usage.prompt_tokens = int(metadata.get("promptTokenCount") or 0) + int(
        metadata.get("toolUsePromptTokenCount") or 0
    )
    usage.completion_tokens = int(metadata.get("candidatesTokenCount") or 0) + thoughts
    usage.total_tokens = int(
        metadata.get("totalTokenCount") or usage.prompt_tokens + usage.completion_tokens
    )
    usage.cached_tokens = int(metadata.get("cachedContentTokenCount") or 0)
    usage.reasoning_tokens = thoughts


class StreamTranslator:
    """Gemini stream responses → chunks; the last chunk waits for the end of the body.

    Thought parts become reasoning deltas: consecutive pieces of thought text make one
    block, which a signature closes; a signature on an answer part is a block of its own,
    as in the unary answer."""

    def __init__(self, provider: str, model: str, keep_reasoning: bool = True) -> None:
        self.provider = provider
        self.template = ChatCompletionChunk(model=model)
        self.keep_reasoning = keep_reasoning
        self.started = False
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.tool_calls = 0
        self.blocks = 0  # reasoning blocks so far
        self.open_thought = False  # the last block is thought text awaiting more

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
            chunks += self._part(part)
        if candidate.get("finishReason"):
            self.finish = finish_reason(candidate["finishReason"], self.tool_calls > 0)
        return chunks

    def _part(self, part: dict[str, Any]) -> list[ChatCompletionChunk]:
        chunks = []
        signature = part.get("thoughtSignature") or ""
        if part.get("thought"):
            text = (part.get("text") or "") if self.keep_reasoning else ""
            if not self.open_thought:
                self.blocks += 1
            chunks.append(self._reasoning(text, signature))
            self.open_thought = not signature
            return chunks
        if self.open_thought or signature:
            self.open_thought = False
        if signature:
            self.blocks += 1
            chunks.append(self._reasoning("", signature))
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
        return chunks

    def _reasoning(self, text: str, signature: str) -> ChatCompletionChunk:
        chunk = text_chunk(self.template, "")
        chunk.choices[0].delta.reasoning.add(index=self.blocks - 1, text=text, signature=signature)
        return chunk

    def last_chunk(self) -> ChatCompletionChunk:
        """The finish reason and usage, once the body has ended."""
        if self.finish is None:
            raise UpstreamUnavailable(
                f"upstream {self.provider!r} ended the stream without a finishReason"
            )
        last = finish_chunk(self.template, self.finish, 0, 0)
        usage_into(last.usage, self.usage)
        return last


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
