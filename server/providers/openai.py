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
from ai_service.providers.base import Deployment, parse_json_body
from ai_service.providers.endpoint import UpstreamEndpoint
from ai_service.providers.framing import iter_sse_batches
from ai_service.providers.http import HttpClient
from ai_service.providers.status_mapping import caller_message, message_in_error_payload
from ai_service.providers.translation import (
    TextRuns,
    function_parameters,
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
    Usage,
)

_SAMPLING_FIELDS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")
_DONE = b"[DONE]"
# Finish reasons OpenAI-compatible servers send that the service names otherwise.
_FINISH_REASONS = {"function_call": "tool_calls"}
# A refusal ends with "stop"; reported as an Anthropic refusal is, so callers see one thing.
_REFUSED = "content_filter"


class OpenAIProvider:
    kind = "openai"
    refuses_requests = False

    def __init__(self, settings: ProviderSettings, http: HttpClient | None = None) -> None:
        self.name = settings.name
        self._max_tokens_field = settings.max_tokens_field
        self._endpoint = self._chat_endpoint(settings, http)

    def _chat_endpoint(
        self, settings: ProviderSettings, http: HttpClient | None
    ) -> UpstreamEndpoint:
        """Where chat completions go (OpenAI-shaped servers elsewhere override it)."""
        return UpstreamEndpoint(
            settings, "/chat/completions", stream_accept="text/event-stream", http=http
        )

    def _chat_url(self, deployment: Deployment) -> str | None:
        """The deployment's own URL, where the API puts it in the path; None: the endpoint's."""
        return None

    async def complete(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,  # the API needs none
    ) -> ChatCompletionResponse:
        body = orjson.dumps(
            request_body(request, deployment.upstream_model, self._max_tokens_field, stream=False)
        )
        payload = await self._endpoint.fetch(body, "a completion", self._chat_url(deployment))
        return translate_failure(response_from_openai, payload)

    async def stream(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,  # the API needs none
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        body = orjson.dumps(
            request_body(request, deployment.upstream_model, self._max_tokens_field, stream=True)
        )
        async with self._endpoint.stream(body, self._chat_url(deployment)) as response:
            finish: ChatCompletionChunk | None = None
            refused = False
            async for events in iter_sse_batches(response.iter_bytes()):
                ready = TextRuns()
                for event in events:
                    if event.data == _DONE:
                        if finish is None:
                            # The stream's contract: its last chunk carries the finish.
                            raise UpstreamUnavailable(
                                f"upstream {self.name!r} sent [DONE] without a finish_reason"
                            )
                        for chunk in ready.take():
                            yield chunk
                        yield finish
                        return
                    payload = parse_json_body(event.data, "a stream event")
                    if "error" in payload:
                        # OpenAI reports a failure after the 200 as an error event.
                        raise UpstreamUnavailable(
                            f"upstream {self.name!r} failed mid-stream: "
                            f"{caller_message(message_in_error_payload(payload))}"
                        )
                    plain = _plain_text_delta(payload)
                    if plain is not None and finish is None:
                        # The common event: its text joins the chunk before it, or
                        # starts one that needs no full translation.
                        index, text = plain
                        if not ready.extend_text(index, text):
                            chunk = translate_failure(_text_chunk, payload, index, text)
                            ready.add_text(chunk, index)
                        continue
                    chunk = translate_failure(chunk_from_openai, payload)
                    refused = refused or _refuses(payload)
                    if finish is not None:
                        # The usage chunk after the finish chunk: merge, wait for [DONE].
                        if chunk.HasField("usage"):
                            finish.usage.CopyFrom(chunk.usage)
                    elif any(choice.finish_reason for choice in chunk.choices):
                        finish = chunk
                        if refused:
                            _mark_refusal(finish)
                    elif chunk.choices:  # not an empty one, such as Azure's prompt filter
                        ready.add(chunk)
                for chunk in ready.take():
                    yield chunk
        raise UpstreamUnavailable(f"upstream {self.name!r} ended the stream without [DONE]")

    def refusal(self, request: ChatCompletionRequest) -> InvalidRequest | None:
        return None  # the gateway's own validation is OpenAI's

    async def aclose(self) -> None:
        await self._endpoint.aclose()


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
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def message_to_openai(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
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
        if not message.content:
            out["content"] = None  # OpenAI's shape for a message that only calls tools
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


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
    usage_into(response.usage, payload.get("usage"))
    return response


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
        # `content` alone is the common delta; anything beside it is looked at.
        or (len(delta) > 1 and (delta.get("role") or delta.get("tool_calls")))
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
