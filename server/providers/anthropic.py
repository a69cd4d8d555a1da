"""The Anthropic Messages API adapter: `POST {base_url}/v1/messages`, unary and SSE.

`base_url` is the API's origin, e.g. `https://api.anthropic.com` (the adapter
appends `/v1/messages`). Follows Anthropic's API reference:

- https://docs.claude.com/en/api/messages (request and `Message` object:
  top-level `system`, `max_tokens` required, `stop_sequences`, `metadata.user_id`,
  `tools` with `input_schema`, `tool_choice` `auto|any|tool|none`, content blocks
  `text` / `tool_use` / `tool_result`, `stop_reason`, `usage.input_tokens` /
  `output_tokens`; headers `x-api-key`, `anthropic-version`)
- https://docs.claude.com/en/docs/build-with-claude/streaming (events
  `message_start`, `content_block_start`, `content_block_delta` with `text_delta` /
  `input_json_delta`, `content_block_stop`, `message_delta` with the stop reason and
  cumulative usage, `message_stop`, `ping`, `error`; unknown event types are to be
  ignored)
- https://docs.claude.com/en/docs/agents-and-tools/tool-use/implement-tool-use
  (tool results go back as `tool_result` blocks in a `user` message, first in it)
- https://docs.claude.com/en/api/errors (`{"type": "error", "error": {"type", "message"},
  "request_id"}`; 429 `rate_limit_error` with `retry-after`, 529 `overloaded_error`;
  the `request-id` response header)

Content (https://docs.claude.com/en/docs/build-with-claude/vision,
https://docs.claude.com/en/docs/build-with-claude/pdf-support,
https://docs.claude.com/en/docs/build-with-claude/extended-thinking,
https://docs.claude.com/en/docs/build-with-claude/prompt-caching): image parts become
`image` blocks and documents `document` blocks, each with a `base64` or `url` source
(a text/plain document as a `text` source; one given by URL is fetched first, the URL
source being for PDFs); the reasoning setting becomes `thinking` (`enabled` with
`budget_tokens`, an effort mapped to 1024/4096/16384, or `disabled`; `display`
`summarized` or `omitted` when include_text is set), and with it on, `max_tokens`
(when the request sets none) is the model's default plus the budget, as thinking
counts toward it. `thinking` and `redacted_thinking` blocks come back as reasoning
blocks with their `signature` or `data` byte for byte (`thinking_delta` and
`signature_delta` in streams), and go back first in their assistant turn, as the API
checks. Cache-control marks become `cache_control` on the block, the tool or the
system text block they follow (the system prompt is then sent as text blocks);
`cache_creation_input_tokens` and `cache_read_input_tokens` are the usage details,
and count in prompt_tokens (Anthropic's `input_tokens` leaves them out). Refused
before a call, as the API would refuse them: audio, an image `detail`, reasoning
without a signature (another provider's), more than 4 cache marks, and with
thinking on a temperature, a top_p below 0.95 or a forced tool. The API has no
embeddings.

What the service's request carries that the Messages API has no field for: system
(and developer) messages (anywhere) are joined into `system`; `seed` and the penalties are dropped
(best effort by the contract); a `name` is dropped; `response_format` other than text
is refused with INVALID_ARGUMENT rather than silently ignored. Consecutive messages of
one role (a tool result, then the user's next words) are merged, as the API requires
alternating turns. Errors are classified by the body's `error.type` where it is
clearer than the status: an `overloaded_error` is UNAVAILABLE whatever the status.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

import orjson

from ai_service.config import ProviderSettings
from ai_service.errors import InvalidRequest, UpstreamError, UpstreamUnavailable
from ai_service.providers.base import Deployment, parse_json_body, request_json
from ai_service.providers.content import (
    b64,
    budget_of,
    cache_control_json,
    cache_marks,
    is_off,
    reasoning_of,
    reasoning_on,
)
from ai_service.providers.endpoint import UpstreamEndpoint
from ai_service.providers.framing import iter_sse_batches
from ai_service.providers.http import HttpClient, UpstreamResponse
from ai_service.providers.http.fetch import MediaFetcher
from ai_service.providers.media import with_bytes
from ai_service.providers.status_mapping import error_from_status
from ai_service.providers.translation import (
    ANTHROPIC_ERROR_STATUS,
    ANTHROPIC_STOP_REASONS,
    EMPTY_OBJECT_SCHEMA,
    SYSTEM_ROLES,
    arguments_object,
    arguments_text,
    coalesce,
    finish_chunk,
    function_parameters,
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
    Tool,
    ToolCall,
    Usage,
)

#: Used when neither the request nor the model's config says how many tokens to allow.
FALLBACK_MAX_TOKENS = 1024
#: Anthropic's temperature range is 0 to 1 (the Messages API reference).
MAX_TEMPERATURE = 1.0

# Where every adapter and the HTTP door find them (translation.py).
FINISH_REASONS = ANTHROPIC_STOP_REASONS
ERROR_STATUS = ANTHROPIC_ERROR_STATUS
_TOOL_CHOICE_MODES = {"auto": "auto", "required": "any", "none": "none"}
#: Cache breakpoints one request may carry (the prompt-caching guide).
MAX_CACHE_MARKS = 4
#: With thinking on, top_p may only be this high or higher (the extended-thinking guide).
MIN_THINKING_TOP_P = 0.95


def _wants_bytes(part: ContentPart) -> bool:
    """URL sources are for images and PDFs; a plain-text document is sent as its text."""
    return part.WhichOneof("kind") == "document" and part.document.media_type == "text/plain"


class AnthropicProvider:
    kind = "anthropic"
    refuses_requests = True
    carries = frozenset({"vision", "documents", "reasoning", "tools", "prompt_caching"})

    def __init__(
        self,
        settings: ProviderSettings,
        http: HttpClient | None = None,
        media: MediaFetcher | None = None,
    ) -> None:
        self.name = settings.name
        self._media = media or MediaFetcher()
        self._endpoint = self._messages_endpoint(settings, http)

    def _messages_endpoint(
        self, settings: ProviderSettings, http: HttpClient | None
    ) -> UpstreamEndpoint:
        """Where messages go (Claude elsewhere, on Vertex AI, overrides it)."""
        return UpstreamEndpoint(
            settings,
            "/v1/messages",
            stream_accept="text/event-stream",
            credentials=lambda secret: {"x-api-key": secret},
            extra_headers={"anthropic-version": settings.anthropic_version},
            map_error=error_from_response,
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
        """The body, and the URL when it is not the endpoint's."""
        return _body(request, deployment, default_max_tokens, stream=stream), None

    async def complete(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,
    ) -> ChatCompletionResponse:
        request = await with_bytes(request, _wants_bytes, self._media)
        body, url = self._wire(request, deployment, default_max_tokens, stream=False)
        payload = await self._endpoint.fetch(body, "a message", url)
        return translate_failure(response_from_anthropic, payload)

    async def stream(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        request = await with_bytes(request, _wants_bytes, self._media)
        body, url = self._wire(request, deployment, default_max_tokens, stream=True)
        async with self._endpoint.stream(body, url) as response:
            translator = StreamTranslator(self.name)
            async for events in iter_sse_batches(response.iter_bytes()):
                ready: list[ChatCompletionChunk] = []
                for event in events:
                    payload = parse_json_body(event.data, f"a {event.event} event")
                    ready += translate_failure(translator.feed, payload)
                for chunk in coalesce(ready):
                    yield chunk
                if translator.done:
                    return
        raise UpstreamUnavailable(f"upstream {self.name!r} ended the stream without message_stop")

    def refusal(self, request: ChatCompletionRequest) -> InvalidRequest | None:
        return request_refusal(request)

    async def embed(self, request: EmbedRequest, deployment: Deployment) -> EmbedResponse:
        # Never routed here (the API carries no "embeddings"); said plainly if it were.
        raise InvalidRequest("model", "Anthropic has no embeddings API")

    async def aclose(self) -> None:
        await self._endpoint.aclose()


def _body(
    request: ChatCompletionRequest,
    deployment: Deployment,
    default_max_tokens: int | None,
    *,
    stream: bool,
) -> bytes:
    # The API requires max_tokens: the request's, else the serving model's default.
    default = FALLBACK_MAX_TOKENS if default_max_tokens is None else default_max_tokens
    model = deployment.upstream_model
    return request_json(request_body(request, model, default, stream=stream))


def error_from_response(response: UpstreamResponse, body: bytes, provider: str) -> UpstreamError:
    """The gateway error for a non-200 answer: by status, except that an `overloaded_error`
    is UNAVAILABLE whatever its status (overload sometimes comes as a 429)."""
    error = error_from_status(
        response.status,
        body,
        retry_after=response.header("retry-after"),
        provider=provider,
    )
    if error_type(body) == "overloaded_error" and not isinstance(error, UpstreamUnavailable):
        error = UpstreamUnavailable(error.message)
    request_id = response.header("request-id")
    if request_id:
        error.metadata["upstream_request_id"] = request_id  # what Anthropic support asks for
    return error


def error_type(body: bytes) -> str | None:
    """`error.type` of an Anthropic error body, if it is one."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None


# --- request: proto → Anthropic JSON ---------------------------------------------------


def request_refusal(request: ChatCompletionRequest) -> InvalidRequest | None:
    """What the Messages API cannot take, refused before a call."""
    if request.HasField("response_format") and request.response_format.type not in ("", "text"):
        return InvalidRequest(
            "response_format.type",
            f"{request.response_format.type!r} is not supported by Anthropic models",
        )
    if request.HasField("temperature") and request.temperature > MAX_TEMPERATURE:
        # The gateway takes OpenAI's 0-2; Anthropic's is 0-1.
        return InvalidRequest(
            "temperature",
            f"is {request.temperature:g}; Anthropic models take 0 to {MAX_TEMPERATURE:g}",
        )
    return _content_refusal(request) or thinking_refusal(request)


def _content_refusal(request: ChatCompletionRequest) -> InvalidRequest | None:
    for i, message in enumerate(request.messages):
        for j, part in enumerate(message.parts):
            path = f"messages[{i}].parts[{j}]"
            kind = part.WhichOneof("kind")
            if kind == "audio":
                return InvalidRequest(f"{path}.audio", "Anthropic models take no audio")
            if kind == "image" and part.image.detail not in ("", "auto"):
                return InvalidRequest(
                    f"{path}.image.detail", "Anthropic models take no detail setting"
                )
            if _undecodable_text(part):
                return InvalidRequest(f"{path}.document.data", "is text/plain but not UTF-8")
        for j, block in enumerate(message.reasoning):
            if block.text and not block.signature:
                return InvalidRequest(
                    f"messages[{i}].reasoning[{j}].signature",
                    "is required by Anthropic models: reasoning from another provider "
                    "cannot be sent back to them",
                )
    marks = list(cache_marks(request))
    if len(marks) > MAX_CACHE_MARKS:
        return InvalidRequest(
            marks[MAX_CACHE_MARKS], f"Anthropic models take at most {MAX_CACHE_MARKS} cache marks"
        )
    return None


def _undecodable_text(part: ContentPart) -> bool:
    document = part.document
    if part.WhichOneof("kind") != "document" or document.media_type != "text/plain":
        return False
    try:
        document.data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def thinking_refusal(request: ChatCompletionRequest) -> InvalidRequest | None:
    """What the API refuses with thinking on (the extended-thinking guide)."""
    if not reasoning_on(request):
        return None
    budget = budget_of(request.reasoning)
    assert budget is not None
    if request.HasField("max_tokens") and budget >= request.max_tokens:
        field = "effort" if request.reasoning.WhichOneof("setting") == "effort" else "budget_tokens"
        return InvalidRequest(
            f"reasoning.{field}",
            f"means {budget} thinking tokens; Anthropic models need max_tokens above that "
            f"(it is {request.max_tokens})",
        )
    if request.HasField("temperature"):
        return InvalidRequest("temperature", "Anthropic models take none with reasoning on")
    if request.HasField("top_p") and request.top_p < MIN_THINKING_TOP_P:
        return InvalidRequest(
            "top_p", f"Anthropic models take {MIN_THINKING_TOP_P} to 1 with reasoning on"
        )
    choice = tool_choice_of(request)
    if choice is not None and choice not in (("mode", "auto"), ("mode", "none")):
        return InvalidRequest(
            f"tool_choice.{choice[0]}", "Anthropic models take only auto or none with reasoning on"
        )
    return None


def request_body(
    request: ChatCompletionRequest, model: str, default_max_tokens: int, *, stream: bool
) -> dict[str, Any]:
    refusal = request_refusal(request)
    if refusal is not None:
        raise refusal
    system, messages = messages_to_anthropic(request.messages)
    thinking = thinking_of(request)
    max_tokens = request.max_tokens if request.HasField("max_tokens") else default_max_tokens
    if thinking is not None and not request.HasField("max_tokens"):
        # Thinking counts toward max_tokens: the default is the answer's, budget beside.
        max_tokens += thinking.get("budget_tokens", 0)
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        body["system"] = system
    if thinking is not None:
        body["thinking"] = thinking
    if request.tools:
        body["tools"] = [tool_to_anthropic(tool) for tool in request.tools]
    choice = tool_choice_of(request)
    if choice is not None:
        which, value = choice
        body["tool_choice"] = (
            {"type": "tool", "name": value}
            if which == "function"
            else {"type": _TOOL_CHOICE_MODES.get(value, "auto")}
        )
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.HasField("temperature"):
        body["temperature"] = request.temperature
    if request.HasField("top_p"):
        body["top_p"] = request.top_p
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


def thinking_of(request: ChatCompletionRequest) -> dict[str, Any] | None:
    setting = reasoning_of(request)
    if setting is None:
        return None
    if is_off(setting):
        return {"type": "disabled"}
    budget = budget_of(setting)
    if budget is None:
        return None  # include_text alone: nothing to turn on
    thinking: dict[str, Any] = {"type": "enabled", "budget_tokens": budget}
    if setting.HasField("include_text"):
        thinking["display"] = "summarized" if setting.include_text else "omitted"
    return thinking


def messages_to_anthropic(
    messages: Sequence[Message],
) -> tuple[str | list[dict[str, Any]], list[dict[str, Any]]]:
    """(system prompt, alternating user/assistant messages). The system prompt is one
    string unless a cache mark or a text part asks for blocks."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role in SYSTEM_ROLES:
            system += text_blocks(message)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = content_blocks(message)
        if out and out[-1]["role"] == role:
            out[-1]["content"] = as_blocks(out[-1]["content"]) + blocks
        elif len(blocks) == 1 and blocks[0].keys() == {"type", "text"}:
            out.append({"role": role, "content": blocks[0]["text"]})  # the documented short form
        else:
            out.append({"role": role, "content": blocks})
    if all(block.keys() == {"type", "text"} for block in system):
        return "\n\n".join(block["text"] for block in system), out
    return system, out


def text_blocks(message: Message) -> list[dict[str, Any]]:
    """A system message's text: its content (with its cache mark), then its text parts."""
    blocks: list[dict[str, Any]] = []
    if message.content or not message.parts:
        blocks.append(_marked({"type": "text", "text": message.content}, message))
    blocks += [part_to_anthropic(part) for part in message.parts]
    return blocks


def _marked(block: dict[str, Any], holder: Message | ContentPart) -> dict[str, Any]:
    if holder.HasField("cache_control"):
        block["cache_control"] = cache_control_json(holder.cache_control)
    return block


def part_to_anthropic(part: ContentPart) -> dict[str, Any]:
    """A content part as a content block (documents/vision guides), with its cache mark."""
    kind = part.WhichOneof("kind")
    block: dict[str, Any]
    if kind == "image":
        image = part.image
        if image.WhichOneof("source") == "url":
            block = {"type": "image", "source": {"type": "url", "url": image.url}}
        else:
            source = {"type": "base64", "media_type": image.media_type, "data": b64(image.data)}
            block = {"type": "image", "source": source}
    elif kind == "document":
        document = part.document
        if document.WhichOneof("source") == "url":
            source = {"type": "url", "url": document.url}
        elif document.media_type == "text/plain":
            source = {
                "type": "text",
                "media_type": "text/plain",
                "data": document.data.decode("utf-8"),
            }
        else:
            source = {
                "type": "base64",
                "media_type": document.media_type,
                "data": b64(document.data),
            }
        block = {"type": "document", "source": source}
        if document.name:
            block["title"] = document.name
    else:
        block = {"type": "text", "text": part.text}
    return _marked(block, part)


def reasoning_blocks(message: Message) -> list[dict[str, Any]]:
    """The message's reasoning, back as the blocks it came as, unmodified and in order."""
    return [
        {"type": "redacted_thinking", "data": block.redacted_data}
        if block.redacted_data
        else {"type": "thinking", "thinking": block.text, "signature": block.signature}
        for block in message.reasoning
    ]


def content_blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.parts:
            block["content"] = text_blocks(message)
        elif message.content:
            block["content"] = message.content
        return [_marked(block, message) if not message.parts else block]
    blocks = reasoning_blocks(message)  # first in the turn, as the API checks
    if message.content:
        blocks.append(_marked({"type": "text", "text": message.content}, message))
    blocks += [part_to_anthropic(part) for part in message.parts]
    for call in message.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": arguments_object(call),
            }
        )
    return blocks


def as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def tool_to_anthropic(tool: Tool) -> dict[str, Any]:
    function = tool.function
    out: dict[str, Any] = {"name": function.name}
    if function.description:
        out["description"] = function.description
    out["input_schema"] = function_parameters(function) or EMPTY_OBJECT_SCHEMA
    if tool.HasField("cache_control"):
        out["cache_control"] = cache_control_json(tool.cache_control)
    return out


# --- response: Anthropic JSON → proto ---------------------------------------------------


def response_from_anthropic(payload: dict[str, Any]) -> ChatCompletionResponse:
    response = ChatCompletionResponse(id=payload.get("id") or "", model=payload.get("model") or "")
    choice = response.choices.add(index=0)
    choice.message.role = "assistant"
    for block in payload["content"]:
        if block["type"] == "text":
            choice.message.content += block["text"]
        elif block["type"] == "tool_use":
            call = ToolCall(id=block["id"], type="function")
            call.function.name = block["name"]
            call.function.arguments = arguments_text(block.get("input"))
            choice.message.tool_calls.append(call)
        elif block["type"] == "thinking":
            choice.message.reasoning.append(
                ReasoningBlock(text=block["thinking"], signature=block["signature"])
            )
        elif block["type"] == "redacted_thinking":
            choice.message.reasoning.append(ReasoningBlock(redacted_data=block["data"]))
        # server-tool blocks have no place in the service's message
    choice.finish_reason = FINISH_REASONS.get(payload.get("stop_reason") or "", "stop")
    UsageCounts().update(payload.get("usage")).into(response.usage)
    return response


class UsageCounts:
    """Anthropic's usage, as it arrives (whole, or in a stream's start and deltas), read
    into the service's: the prompt counts cache reads and writes, which Anthropic's
    `input_tokens` leaves out."""

    __slots__ = ("cache_read", "cache_write", "input", "output")

    def __init__(self) -> None:
        self.input = self.output = self.cache_read = self.cache_write = 0

    def update(self, usage: dict[str, Any] | None) -> UsageCounts:
        for field, name in (
            ("input", "input_tokens"),
            ("output", "output_tokens"),
            ("cache_read", "cache_read_input_tokens"),
            ("cache_write", "cache_creation_input_tokens"),
        ):
            value = (usage or {}).get(name)
            if value is not None:  # a stream's delta repeats only what it has
                setattr(self, field, int(value))
        return self

    def into(self, usage: Usage) -> None:
        usage.prompt_tokens = self.input + self.cache_read + self.cache_write
        usage.completion_tokens = self.output
        usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        usage.cached_tokens = self.cache_read
        usage.cache_write_tokens = self.cache_write


class StreamTranslator:
    """Anthropic stream events → chunks, one event at a time.

    The first chunk (role) comes from `message_start`, text and tool-call pieces from the
    content block events, and one last chunk with the finish reason and usage from
    `message_stop`, which also marks the stream as `done`.
    """

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.template = ChatCompletionChunk()
        self.usage = UsageCounts()
        self.finish_reason = "stop"
        self.done = False
        # content block index → (tool call index, whether any input arrived)
        self._tools: dict[int, list[int]] = {}
        # content block index → reasoning block index
        self._reasoning: dict[int, int] = {}

    def feed(self, event: dict[str, Any]) -> list[ChatCompletionChunk]:
        kind = event.get("type")
        if kind == "message_start":
            message = event["message"]
            self.template = ChatCompletionChunk(
                id=message.get("id") or "", model=message.get("model") or ""
            )
            self.usage.update(message.get("usage"))
            return [text_chunk(self.template, "", role="assistant")]
        if kind == "content_block_start":
            block = event["content_block"]
            if block["type"] == "tool_use":
                index = len(self._tools)
                self._tools[event["index"]] = [index, 0]
                return [self._tool_piece(index, "", block["id"], block["name"])]
            if block["type"] == "text" and block.get("text"):
                return [text_chunk(self.template, block["text"])]
            if block["type"] in ("thinking", "redacted_thinking"):
                index = self._reasoning[event["index"]] = len(self._reasoning)
                if block.get("thinking") or block.get("data") or block.get("signature"):
                    return [
                        self._reasoning_piece(
                            index,
                            text=block.get("thinking") or "",
                            signature=block.get("signature") or "",
                            redacted_data=block.get("data") or "",
                        )
                    ]
            return []
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                return [text_chunk(self.template, delta["text"])]
            if delta["type"] == "input_json_delta" and delta["partial_json"]:
                tool = self._tools.get(event["index"])
                if tool is None:  # a server tool's input (web search...): no call of the caller's
                    return []
                tool[1] = 1
                return [self._tool_piece(tool[0], delta["partial_json"])]
            if delta["type"] == "thinking_delta" and delta["thinking"]:
                index = self._reasoning[event["index"]]
                return [self._reasoning_piece(index, text=delta["thinking"])]
            if delta["type"] == "signature_delta":
                index = self._reasoning[event["index"]]
                return [self._reasoning_piece(index, signature=delta["signature"])]
            return []  # citations: not part of the service's message
        if kind == "content_block_stop":
            started = self._tools.get(event["index"])
            if started is not None and not started[1]:
                return [self._tool_piece(started[0], "{}")]  # as the unary answer's `input: {}`
            return []
        if kind == "message_delta":
            stop_reason = (event.get("delta") or {}).get("stop_reason")
            self.finish_reason = FINISH_REASONS.get(stop_reason or "", "stop")
            self.usage.update(event.get("usage"))
            return []
        if kind == "message_stop":
            self.done = True
            last = finish_chunk(self.template, self.finish_reason, 0, 0)
            self.usage.into(last.usage)
            return [last]
        if kind == "error":
            raise stream_error(self.provider, event)
        return []  # `ping`, and event types added later (the docs ask clients to ignore them)

    def _reasoning_piece(
        self, index: int, *, text: str = "", signature: str = "", redacted_data: str = ""
    ) -> ChatCompletionChunk:
        chunk = text_chunk(self.template, "")
        chunk.choices[0].delta.reasoning.add(
            index=index, text=text, signature=signature, redacted_data=redacted_data
        )
        return chunk

    def _tool_piece(
        self, index: int, arguments: str, call_id: str = "", name: str = ""
    ) -> ChatCompletionChunk:
        chunk = text_chunk(self.template, "")
        piece = chunk.choices[0].delta.tool_calls.add(
            index=index, id=call_id, type="function" if call_id else ""
        )
        piece.function.name = name
        piece.function.arguments = arguments
        return chunk


def stream_error(provider: str, event: dict[str, Any]) -> UpstreamError:
    """An `error` event after the 200, classified as if it had come with its status."""
    status = ERROR_STATUS.get(str((event.get("error") or {}).get("type")), 500)
    return error_from_status(status, orjson.dumps(event), retry_after=None, provider=provider)
