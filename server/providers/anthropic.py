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

What the service's request carries that the Messages API has no field for: system
messages (anywhere) are joined into `system`; `seed` and the penalties are dropped
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
from ai_service.providers.base import Deployment, parse_json_body
from ai_service.providers.endpoint import UpstreamEndpoint
from ai_service.providers.framing import iter_sse_batches
from ai_service.providers.http import HttpClient, UpstreamResponse
from ai_service.providers.status_mapping import error_from_status
from ai_service.providers.translation import (
    EMPTY_OBJECT_SCHEMA,
    arguments_object,
    arguments_text,
    coalesce,
    finish_chunk,
    function_parameters,
    set_usage,
    text_chunk,
    tool_choice_of,
    translate_failure,
)
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    FunctionDefinition,
    Message,
    ToolCall,
)

#: Used when neither the request nor the model's config says how many tokens to allow.
FALLBACK_MAX_TOKENS = 1024
#: Anthropic's temperature range is 0 to 1 (the Messages API reference).
MAX_TEMPERATURE = 1.0

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The status each documented error type comes with, for errors that arrive inside a
# stream (after the 200) and so carry no status of their own.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_TOOL_CHOICE_MODES = {"auto": "auto", "required": "any", "none": "none"}


class AnthropicProvider:
    kind = "anthropic"
    refuses_requests = True

    def __init__(
        self,
        settings: ProviderSettings,
        http: HttpClient | None = None,
    ) -> None:
        self.name = settings.name
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
        body, url = self._wire(request, deployment, default_max_tokens, stream=False)
        payload = await self._endpoint.fetch(body, "a message", url)
        return translate_failure(response_from_anthropic, payload)

    async def stream(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
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
    return orjson.dumps(request_body(request, model, default, stream=stream))


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
    return None


def request_body(
    request: ChatCompletionRequest, model: str, default_max_tokens: int, *, stream: bool
) -> dict[str, Any]:
    refusal = request_refusal(request)
    if refusal is not None:
        raise refusal
    system, messages = messages_to_anthropic(request.messages)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens if request.HasField("max_tokens") else default_max_tokens,
        "messages": messages,
    }
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [tool_to_anthropic(tool.function) for tool in request.tools]
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


def messages_to_anthropic(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, alternating user/assistant messages)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = content_blocks(message)
        if out and out[-1]["role"] == role:
            out[-1]["content"] = as_blocks(out[-1]["content"]) + blocks
        elif len(blocks) == 1 and blocks[0]["type"] == "text":
            out.append({"role": role, "content": blocks[0]["text"]})  # the documented short form
        else:
            out.append({"role": role, "content": blocks})
    return "\n\n".join(system), out


def content_blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:
            block["content"] = message.content
        return [block]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
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


def tool_to_anthropic(function: FunctionDefinition) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": function.name}
    if function.description:
        tool["description"] = function.description
    tool["input_schema"] = function_parameters(function) or EMPTY_OBJECT_SCHEMA
    return tool


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
        # thinking and server-tool blocks have no place in the service's message
    choice.finish_reason = FINISH_REASONS.get(payload.get("stop_reason") or "", "stop")
    usage = payload.get("usage") or {}
    set_usage(
        response.usage, int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    )
    return response


class StreamTranslator:
    """Anthropic stream events → chunks, one event at a time.

    The first chunk (role) comes from `message_start`, text and tool-call pieces from the
    content block events, and one last chunk with the finish reason and usage from
    `message_stop`, which also marks the stream as `done`.
    """

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.template = ChatCompletionChunk()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason = "stop"
        self.done = False
        # content block index → (tool call index, whether any input arrived)
        self._tools: dict[int, list[int]] = {}

    def feed(self, event: dict[str, Any]) -> list[ChatCompletionChunk]:
        kind = event.get("type")
        if kind == "message_start":
            message = event["message"]
            self.template = ChatCompletionChunk(
                id=message.get("id") or "", model=message.get("model") or ""
            )
            self._usage(message.get("usage"))
            return [text_chunk(self.template, "", role="assistant")]
        if kind == "content_block_start":
            block = event["content_block"]
            if block["type"] == "tool_use":
                index = len(self._tools)
                self._tools[event["index"]] = [index, 0]
                return [self._tool_piece(index, "", block["id"], block["name"])]
            if block["type"] == "text" and block.get("text"):
                return [text_chunk(self.template, block["text"])]
            return []
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                return [text_chunk(self.template, delta["text"])]
            if delta["type"] == "input_json_delta" and delta["partial_json"]:
                tool = self._tools[event["index"]]
                tool[1] = 1
                return [self._tool_piece(tool[0], delta["partial_json"])]
            return []  # thinking, signatures, citations: not part of the service's message
        if kind == "content_block_stop":
            started = self._tools.get(event["index"])
            if started is not None and not started[1]:
                return [self._tool_piece(started[0], "{}")]  # as the unary answer's `input: {}`
            return []
        if kind == "message_delta":
            stop_reason = (event.get("delta") or {}).get("stop_reason")
            self.finish_reason = FINISH_REASONS.get(stop_reason or "", "stop")
            self._usage(event.get("usage"))
            return []
        if kind == "message_stop":
            self.done = True
            return [
                finish_chunk(
                    self.template, self.finish_reason, self.prompt_tokens, self.completion_tokens
                )
            ]
        if kind == "error":
            raise stream_error(self.provider, event)
        return []  # `ping`, and event types added later (the docs ask clients to ignore them)

    def _usage(self, usage: dict[str, Any] | None) -> None:
        # message_delta's counts are cumulative; input_tokens comes with message_start.
        if not usage:
            return
        if usage.get("input_tokens") is not None:
            self.prompt_tokens = int(usage["input_tokens"])
        if usage.get("output_tokens") is not None:
            self.completion_tokens = int(usage["output_tokens"])

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
