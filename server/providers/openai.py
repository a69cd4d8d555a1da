"""Adapter for the OpenAI chat-completions API and every server compatible with it.

Follows https://platform.openai.com/docs/api-reference/chat/create (request,
the chat.completion object) and
https://platform.openai.com/docs/api-reference/chat-streaming (the
chat.completion.chunk object, `stream_options.include_usage`, `data: [DONE]`);
vLLM, LiteLLM, Together and DeepSeek serve the same shapes.

OpenAI sends the finish reason and the usage in two separate chunks at the end
of a stream; the service's contract wants both on the last chunk, so the finish
chunk is held until the usage chunk (or `[DONE]`) arrives and sent as one.

Text deltas (and pieces of one tool call's arguments) that arrived in the same
network read are coalesced into one chunk: each gRPC message costs far more than
the bytes it carries, and the caller gets the same text no later (nothing ever
waits for more to arrive). Tool-call deltas pass through addressed by `index`,
with id, type and name on the first piece only, exactly as OpenAI streams them;
the legacy `function_call` finish reason is reported as `tool_calls`.

Content parts follow the reference's user content parts: `image_url` (the URL, or the
bytes as a data URL, with `detail`), `file` (`filename` and `file_data` as a data URL;
a document given by URL is fetched by the gateway first, the API taking no file URL)
and `input_audio` (raw base64, `wav` or `mp3`). The reasoning setting becomes
`reasoning_effort` (a budget mapped to an effort, off to `none`);
`completion_tokens_details.reasoning_tokens`, `prompt_tokens_details.cached_tokens`
(and `cache_write_tokens`, where sent) fill the usage details. OpenAI returns no
reasoning text and takes none back (reasoning blocks of earlier turns are not sent:
Chat Completions has no field for them); compatible servers that send the text as
`reasoning_content` (DeepSeek, vLLM) or `reasoning` have it carried. Prompt caching
is automatic on OpenAI's side, so cache-control marks have nothing to become.
Embeddings: `POST {base_url}/embeddings`
(https://platform.openai.com/docs/api-reference/embeddings/create).

`max_tokens` goes out as the provider's `max_tokens_field` (`max_completion_tokens` by
default: OpenAI deprecated `max_tokens`, and its reasoning models refuse it). A refusal
(`refusal` in place of `content`) is the answer's text, ending `content_filter` as an
Anthropic refusal does. A stream whose `[DONE]` comes before any finish reason was cut
short: it fails rather than end quietly.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson

from ai_service.config import ProviderSettings
from ai_service.errors import InvalidRequest, UpstreamUnavailable
from ai_service.providers.base import CAPABILITIES, Deployment, parse_json_body, request_json
from ai_service.providers.content import b64, data_url, effort_of, is_off, reasoning_of
from ai_service.providers.embeddings import complete, embedding_from, wants_bytes
from ai_service.providers.endpoint import UpstreamEndpoint
from ai_service.providers.framing import SSEEvent, iter_sse_batches
from ai_service.providers.http import HttpClient, create_http_client
from ai_service.providers.http.fetch import MediaFetcher
from ai_service.providers.media import with_bytes
from ai_service.providers.status_mapping import caller_message, message_in_error_payload
from ai_service.providers.translation import (
    TextRuns,
    function_parameters,
    hide_reasoning_text,
    is_empty,
    keeps_reasoning_text,
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
    FunctionDefinition,
    Message,
    ReasoningBlock,
    ToolCall,
    Usage,
)

_SAMPLING_FIELDS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
_DONE = b"[DONE]"
# Finish reasons OpenAI-compatible servers send that the service names otherwise.
_FINISH_REASONS = {"function_call": "tool_calls"}
# A refusal ends with "stop"; reported as an Anthropic refusal is, so callers see one thing.
_REFUSED = "content_filter"


def _wants_bytes(part: ContentPart) -> bool:
    """The API takes images by URL, but documents only as file data."""
    return bool(part.WhichOneof("kind") == "document")


class OpenAIProvider:
    kind = "openai"
    refuses_requests = False
    carries = frozenset(CAPABILITIES)

    def __init__(
        self,
        settings: ProviderSettings,
        http: HttpClient | None = None,
        media: MediaFetcher | None = None,
    ) -> None:
        self.name = settings.name
        self._max_tokens_field = settings.max_tokens_field
        http = http or create_http_client(settings)
        self._endpoint = self._chat_endpoint(settings, http)
        self._embeddings = self._embeddings_endpoint(settings, http)
        self._media = media or MediaFetcher()

    def _chat_endpoint(self, settings: ProviderSettings, http: HttpClient) -> UpstreamEndpoint:
        """Where chat completions go (OpenAI-shaped servers elsewhere override it)."""
        return UpstreamEndpoint(
            settings, "/chat/completions", stream_accept="text/event-stream", http=http
        )

    def _embeddings_endpoint(
        self, settings: ProviderSettings, http: HttpClient
    ) -> UpstreamEndpoint:
        return UpstreamEndpoint(
            settings, "/embeddings", stream_accept="application/json", http=http
        )

    async def _body(
        self, request: ChatCompletionRequest, deployment: Deployment, *, stream: bool
    ) -> bytes:
        request = await with_bytes(request, _wants_bytes, self._media)
        return request_json(
            request_body(request, deployment.upstream_model, self._max_tokens_field, stream=stream)
        )

    def _url(self, deployment: Deployment, path: str) -> str | None:
        """The URL of `path` (`/chat/completions`, `/embeddings`) for the deployment, where
        the API names it in the URL; None: the endpoint's own."""
        return None

    async def complete(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,  # the API needs none
    ) -> ChatCompletionResponse:
        body = await self._body(request, deployment, stream=False)
        payload = await self._endpoint.fetch(
            body, "a completion", self._url(deployment, "/chat/completions")
        )
        response = translate_failure(response_from_openai, payload)
        if not keeps_reasoning_text(request):
            hide_reasoning_text(response)
        return response

    async def stream(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,  # the API needs none
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        body = await self._body(request, deployment, stream=True)
        events = _StreamEvents(self.name, keeps_reasoning_text(request))
        async with self._endpoint.stream(
            body, self._url(deployment, "/chat/completions")
        ) as response:
            async for batch in iter_sse_batches(response.iter_bytes()):
                chunks, done = events.translate(batch)
                for chunk in chunks:
                    yield chunk
                if done:
                    return
        raise UpstreamUnavailable(f"upstream {self.name!r} ended the stream without [DONE]")

    def refusal(self, request: ChatCompletionRequest) -> InvalidRequest | None:
        return None  # the gateway's own validation is OpenAI's

    async def embed(self, request: EmbedRequest, deployment: Deployment) -> EmbedResponse:
        body = orjson.dumps(embed_body(request, deployment.upstream_model))
        url = self._url(deployment, "/embeddings")
        payload = await self._embeddings.fetch(body, "embeddings", url)
        return translate_failure(embed_response_from_openai, payload, request, self.name)

    async def aclose(self) -> None:
        await self._endpoint.aclose()  # the embeddings endpoint shares its client


# --- request: proto → OpenAI JSON ---------------------------------------------------


def request_body(
    request: ChatCompletionRequest, model: str, max_tokens_field: str, *, stream: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [message_to_openai(message) for message in request.messages],
    }
    if request.tools:
        body["tools"] = [
            {"type": tool.type or "function", "function": function_to_openai(tool.function)}
            for tool in request.tools
        ]
    choice = tool_choice_of(request)
    if choice is not None:
        which, value = choice
        body["tool_choice"] = (
            value if which == "mode" else {"type": "function", "function": {"name": value}}
        )
    if request.HasField("max_tokens"):
        body[max_tokens_field] = request.max_tokens
    for field in _SAMPLING_FIELDS:
        if request.HasField(field):
            body[field] = getattr(request, field)
    if request.stop:
        body["stop"] = list(request.stop)
    if request.user:
        body["user"] = request.user
    if request.HasField("response_format") and request.response_format.type:
        body["response_format"] = response_format_to_openai(request)
    reasoning = reasoning_of(request)
    if reasoning is not None:
        effort = "none" if is_off(reasoning) else effort_of(reasoning)
        if effort is not None:
            body["reasoning_effort"] = effort
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def message_to_openai(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.parts:
        parts = [{"type": "text", "text": message.content}] if message.content else []
        out["content"] = parts + [part_to_openai(part) for part in message.parts]
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": call.type or "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
        if not message.content and not message.parts:
            out["content"] = None  # OpenAI's shape for a message that only calls tools
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def part_to_openai(part: ContentPart) -> dict[str, Any]:
    """A content part as the reference's user content parts (documents by URL were
    fetched before: `file_data` takes only data)."""
    kind = part.WhichOneof("kind")
    if kind == "image":
        image = part.image
        url = image.url if image.WhichOneof("source") == "url" else None
        spec: dict[str, Any] = {"url": url or data_url(image.media_type, image.data)}
        if image.detail:
            spec["detail"] = image.detail
        return {"type": "image_url", "image_url": spec}
    if kind == "document":
        document = part.document
        file = {
            "filename": document.name or _default_filename(document.media_type),
            "file_data": data_url(document.media_type, document.data),
        }
        return {"type": "file", "file": file}
    if kind == "audio":
        audio = {"data": b64(part.audio.data), "format": part.audio.format}
        return {"type": "input_audio", "input_audio": audio}
    return {"type": "text", "text": part.text}


def _default_filename(media_type: str) -> str:
    return "document.pdf" if media_type == "application/pdf" else "document.txt"


def embed_body(request: EmbedRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "input": list(request.inputs),
        # base64 is a quarter of the bytes of a JSON float list, and exact.
        "encoding_format": "base64" if wants_bytes(request) else "float",
    }
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions
    if request.user:
        body["user"] = request.user
    return body


def embed_response_from_openai(
    payload: dict[str, Any], request: EmbedRequest, provider: str
) -> EmbedResponse:
    as_bytes = wants_bytes(request)
    response = EmbedResponse(model=payload.get("model") or "")
    embeddings = [
        embedding_from(int(item["index"]), item["embedding"], as_bytes) for item in payload["data"]
    ]
    usage = payload.get("usage") or {}
    response.usage.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    response.usage.total_tokens = int(usage.get("total_tokens") or response.usage.prompt_tokens)
    return complete(response, embeddings, len(request.inputs), provider)


def function_to_openai(function: FunctionDefinition) -> dict[str, Any]:
    out: dict[str, Any] = {"name": function.name}
    if function.description:
        out["description"] = function.description
    parameters = function_parameters(function)
    if parameters is not None:
        out["parameters"] = parameters
    if function.HasField("strict"):
        out["strict"] = function.strict
    return out


def response_format_to_openai(request: ChatCompletionRequest) -> dict[str, Any]:
    fmt = request.response_format
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    schema: dict[str, Any] = {"name": fmt.schema_name or "response"}
    if fmt.json_schema:
        schema["schema"] = orjson.loads(fmt.json_schema)
    if fmt.HasField("strict"):
        schema["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": schema}


# --- response: OpenAI JSON → proto ---------------------------------------------------


def response_from_openai(payload: dict[str, Any]) -> ChatCompletionResponse:
    response = ChatCompletionResponse(
        id=payload.get("id") or "",
        model=payload.get("model") or "",
        created=int(payload.get("created") or 0),
    )
    for choice in payload["choices"]:
        message = choice.get("message") or {}
        out = response.choices.add(index=choice.get("index") or 0)
        out.finish_reason = finish_reason(choice.get("finish_reason"))
        out.message.role = message.get("role") or "assistant"
        # A refusal (structured outputs) comes instead of content: it is the answer.
        out.message.content = message.get("content") or message.get("refusal") or ""
        if message.get("refusal") and out.finish_reason == "stop":
            out.finish_reason = _REFUSED
        for call in message.get("tool_calls") or ():
            out.message.tool_calls.append(tool_call_from_openai(call))
        reasoning = _reasoning_text(message)
        if reasoning:
            out.message.reasoning.append(ReasoningBlock(text=reasoning))
    usage_into(response.usage, payload.get("usage"))
    return response


def _reasoning_text(message: dict[str, Any]) -> str:
    """Reasoning text as compatible servers send it (OpenAI itself sends none)."""
    text = message.get("reasoning_content") or message.get("reasoning")
    return text if isinstance(text, str) else ""


def tool_call_from_openai(call: dict[str, Any]) -> ToolCall:
    function = call.get("function") or {}
    tool_call = ToolCall(id=call.get("id") or "", type=call.get("type") or "function")
    tool_call.function.name = function.get("name") or ""
    tool_call.function.arguments = function.get("arguments") or ""
    return tool_call


def _empty_chunk(payload: dict[str, Any]) -> ChatCompletionChunk:
    """A chunk with the event's id, model and time, and nothing else yet."""
    return ChatCompletionChunk(
        id=payload.get("id") or "",
        model=payload.get("model") or "",
        created=int(payload.get("created") or 0),
    )


def chunk_from_openai(payload: dict[str, Any]) -> ChatCompletionChunk:
    chunk = _empty_chunk(payload)
    for choice in payload.get("choices") or ():
        delta = choice.get("delta") or {}
        out = chunk.choices.add(index=choice.get("index") or 0)
        out.finish_reason = finish_reason(choice.get("finish_reason"))
        out.delta.role = delta.get("role") or ""
        out.delta.content = delta.get("content") or delta.get("refusal") or ""
        reasoning = _reasoning_text(delta)
        if reasoning:
            out.delta.reasoning.add(index=0, text=reasoning)
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            piece = out.delta.tool_calls.add(
                index=call.get("index") or 0, id=call.get("id") or "", type=call.get("type") or ""
            )
            piece.function.name = function.get("name") or ""
            piece.function.arguments = function.get("arguments") or ""
    usage_into(chunk.usage, payload.get("usage"))
    return chunk


def _text_chunk(payload: dict[str, Any], index: int, text: str) -> ChatCompletionChunk:
    """The chunk of an event `_plain_text_delta` read: `text` for choice `index`."""
    chunk = _empty_chunk(payload)
    chunk.choices.add(index=index).delta.content = text
    return chunk


class _StreamEvents:
    """OpenAI's stream events → chunks, one network read's batch at a time.

    Its own object, not the adapter's loop: the adapter's frame waits on the upstream for
    as long as the stream lasts, and keeps none of the last batch's parsed JSON.
    """

    __slots__ = ("_finish", "_keep_reasoning", "_name", "_refused")

    def __init__(self, name: str, keep_reasoning: bool) -> None:
        self._name = name
        self._keep_reasoning = keep_reasoning
        self._finish: ChatCompletionChunk | None = None
        self._refused = False

    def translate(self, events: list[SSEEvent]) -> tuple[list[ChatCompletionChunk], bool]:
        """The chunks `events` make, and whether the stream is over (`[DONE]`)."""
        ready = TextRuns()
        for event in events:
            if event.data == _DONE:
                if self._finish is None:
                    # The stream's contract: its last chunk carries the finish.
                    raise UpstreamUnavailable(
                        f"upstream {self._name!r} sent [DONE] without a finish_reason"
                    )
                return [*ready.take(), self._finish], True
            payload = parse_json_body(event.data, "a stream event")
            if "error" in payload:
                # OpenAI reports a failure after the 200 as an error event.
                raise UpstreamUnavailable(
                    f"upstream {self._name!r} failed mid-stream: "
                    f"{caller_message(message_in_error_payload(payload))}"
                )
            plain = _plain_text_delta(payload)
            if plain is not None and self._finish is None:
                # The common event: its text joins the chunk before it, or starts one
                # that needs no full translation.
                index, text = plain
                if not ready.extend_text(index, text):
                    ready.add_text(translate_failure(_text_chunk, payload, index, text), index)
                continue
            chunk = translate_failure(chunk_from_openai, payload)
            if not self._keep_reasoning:
                for choice in chunk.choices:
                    del choice.delta.reasoning[:]
                if is_empty(chunk) and chunk.choices:
                    continue
            self._refused = self._refused or _refuses(payload)
            if self._finish is not None:
                # The usage chunk after the finish chunk: merge, wait for [DONE].
                if chunk.HasField("usage"):
                    self._finish.usage.CopyFrom(chunk.usage)
            elif any(choice.finish_reason for choice in chunk.choices):
                self._finish = chunk
                if self._refused:
                    _mark_refusal(chunk)
            elif chunk.choices:  # not an empty one, such as Azure's prompt filter
                ready.add(chunk)
        return ready.take(), False


def _plain_text_delta(payload: dict[str, Any]) -> tuple[int, str] | None:
    """(choice index, text) of an event that only adds text to one choice, read straight
    from the JSON: most events of a stream, which then need no chunk of their own.
    Anything else (None) takes the full translation."""
    try:
        (choice,) = payload["choices"]
        delta = choice["delta"]
        content = delta["content"]
        index = choice.get("index") or 0
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if (
        type(content) is not str
        or type(index) is not int
        or choice.get("finish_reason")
        or payload.get("usage")
        # `content` alone is the common delta; anything beside it is looked at (a
        # refusal may come beside an empty `content`, not only beside a null one).
        or (
            len(delta) > 1
            and (
                delta.get("role")
                or delta.get("tool_calls")
                or delta.get("reasoning_content")
                or delta.get("reasoning")
                or delta.get("refusal")
            )
        )
    ):
        return None
    return index, content


def _refuses(payload: dict[str, Any]) -> bool:
    """Whether a stream event carries refusal text."""
    return any(
        (choice.get("delta") or {}).get("refusal") for choice in payload.get("choices") or ()
    )


def _mark_refusal(finish: ChatCompletionChunk) -> None:
    for choice in finish.choices:
        if choice.finish_reason == "stop":
            choice.finish_reason = _REFUSED


def finish_reason(value: Any) -> str:
    reason = value if isinstance(value, str) else ""
    return _FINISH_REASONS.get(reason, reason)


def usage_into(usage: Usage, payload: dict[str, Any] | None) -> None:
    if not payload:
        return
    usage.prompt_tokens = int(payload.get("prompt_tokens") or 0)
    usage.completion_tokens = int(payload.get("completion_tokens") or 0)
    usage.total_tokens = int(
        payload.get("total_tokens") or usage.prompt_tokens + usage.completion_tokens
    )
    # Optional details, each parsed defensively (compatible servers send fewer, or null).
    prompt_details = payload.get("prompt_tokens_details") or {}
    completion_details = payload.get("completion_tokens_details") or {}
    usage.cached_tokens = int(prompt_details.get("cached_tokens") or 0)
    usage.cache_write_tokens = int(prompt_details.get("cache_write_tokens") or 0)
    usage.reasoning_tokens = int(completion_details.get("reasoning_tokens") or 0)
