"""The Ollama native chat adapter: `POST {base_url}/api/chat`, unary and NDJSON streaming.

`base_url` is the server's origin, e.g. `http://localhost:11434` (the adapter appends
`/api/chat`). Follows Ollama's API reference,
https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion
(also https://docs.ollama.com/api/chat):

- request: `model`, `messages` (`role` system/user/assistant/tool, `content`,
  `tool_calls` with `function.name` and `function.arguments` as a JSON *object*,
  `tool_name` on a tool result), `tools` (OpenAI's function shape), `format` (`"json"`
  or a JSON schema), `options` (the Modelfile parameters: `temperature`, `top_p`,
  `seed`, `stop`, `num_predict`, `presence_penalty`, `frequency_penalty`), `stream`
  (true unless sent false);
- response: one object, or with streaming one object per line, each with `model`,
  `created_at` and a `message` piece; the last has `done: true`, `done_reason`
  (`stop`, `length`), `prompt_eval_count` and `eval_count`. Tool calls arrive whole.
- errors: `{"error": "..."}` with the HTTP status, or as a line of the stream.

Ollama gives no completion id and no tool-call ids: the adapter makes them up (the
service's contract needs a `tool_call_id` to answer), and turns a tool result's
`tool_call_id` back into the `tool_name` Ollama wants. It has no `tool_choice`:
"none" sends no tools, a named function sends only that tool, "required" cannot be
enforced. `user` has no field and is not sent.

Content (`api/types.go`; https://docs.ollama.com/capabilities/vision, .../thinking): a
message's images go in its `images` as raw base64 (one given by URL is fetched first),
its text parts after its content in `content`; the reasoning setting becomes `think`
(an effort level, a budget mapped to one, or `false`), and the answer's `thinking` (in
streams, the lines' `thinking` pieces) a reasoning block; an assistant turn's reasoning
goes back in its `thinking`. Refused before a call, as the API has nowhere to put them:
an image `detail` and redacted reasoning (documents, audio and cache marks are not
among Ollama's capabilities). Embeddings: `POST {base_url}/api/embed`
(https://github.com/ollama/ollama/blob/main/docs/api.md#generate-embeddings).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any

import orjson

from ai_service.config import ProviderSettings
from ai_service.errors import InvalidRequest, UpstreamUnavailable
from ai_service.providers.base import Deployment, parse_json_body, request_json
from ai_service.providers.content import b64, effort_of, is_off, reasoning_of
from ai_service.providers.embeddings import complete, embedding_from, wants_bytes
from ai_service.providers.endpoint import UpstreamEndpoint
from ai_service.providers.framing import iter_line_batches
from ai_service.providers.http import HttpClient, create_http_client
from ai_service.providers.http.fetch import MediaFetcher
from ai_service.providers.media import with_bytes
from ai_service.providers.status_mapping import caller_message, message_in_error_payload
from ai_service.providers.translation import (
    arguments_object,
    arguments_text,
    coalesce,
    finish_chunk,
    function_parameters,
    hide_reasoning_text,
    keeps_reasoning_text,
    set_usage,
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
)

# The service's sampling fields and the Modelfile parameter each becomes.
_OPTIONS = (
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("seed", "seed"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
    ("max_tokens", "num_predict"),
)


def _wants_bytes(part: ContentPart) -> bool:
    return True  # `images` are bytes only (and only images reach it)


class OllamaProvider:
    kind = "ollama"
    refuses_requests = True
    carries = frozenset({"vision", "reasoning", "tools", "embeddings"})

    def __init__(
        self,
        settings: ProviderSettings,
        http: HttpClient | None = None,
        media: MediaFetcher | None = None,
    ) -> None:
        self.name = settings.name
        http = http or create_http_client(settings)
        # Ollama itself has no auth; a proxy in front of it (or ollama.com) takes a bearer.
        self._endpoint = UpstreamEndpoint(
            settings, "/api/chat", stream_accept="application/x-ndjson", http=http
        )
        self._embed = UpstreamEndpoint(
            settings, "/api/embed", stream_accept="application/json", http=http
        )
        self._media = media or MediaFetcher()

    async def _body(
        self, request: ChatCompletionRequest, deployment: Deployment, *, stream: bool
    ) -> bytes:
        request = await with_bytes(request, _wants_bytes, self._media)
        return request_json(request_body(request, deployment.upstream_model, stream=stream))

    async def complete(
        self,
        request: ChatCompletionRequest,
        deployment: Deployment,
        default_max_tokens: int | None = None,  # the API needs none
    ) -> ChatCompletionResponse:
        body = await self._body(request, deployment, stream=False)
        payload = await self._endpoint.fetch(body, "a chat answer")
        response = translate_failure(response_from_ollama, payload)
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
        async with self._endpoint.stream(body) as response:
            translator = StreamTranslator(self.name, keeps_reasoning_text(request))
            async for lines in iter_line_batches(response.iter_bytes()):
                ready: list[ChatCompletionChunk] = []
                for line in lines:
                    if line.strip():
                        payload = parse_json_body(line, "a stream line")
                        ready += translate_failure(translator.feed, payload)
                for chunk in coalesce(ready):
                    yield chunk
                if translator.done:
                    return
        raise UpstreamUnavailable(f"upstream {self.name!r} ended the stream without done: true")

    def refusal(self, request: ChatCompletionRequest) -> InvalidRequest | None:
        for i, message in enumerate(request.messages):
            for j, part in enumerate(message.parts):
                if part.WhichOneof("kind") == "image" and part.image.detail not in ("", "auto"):
                    return InvalidRequest(
                        f"messages[{i}].parts[{j}].image.detail",
                        "Ollama models take no detail setting",
                    )
            for j, block in enumerate(message.reasoning):
                if block.redacted_data:
                    return InvalidRequest(
                        f"messages[{i}].reasoning[{j}].redacted_data",
                        "Ollama models cannot take redacted reasoning back",
                    )
        return None  # other fields Ollama has none for are dropped (the module's docstring)

    async def embed(self, request: EmbedRequest, deployment: Deployment) -> EmbedResponse:
        body: dict[str, Any] = {"model": deployment.upstream_model, "input": list(request.inputs)}
        if request.HasField("dimensions"):
            body["dimensions"] = request.dimensions
        payload = await self._embed.fetch(orjson.dumps(body), "embeddings")
        return translate_failure(embed_response_from_ollama, payload, request, self.name)

    async def aclose(self) -> None:
        await self._endpoint.aclose()  # the embed endpoint shares its client


# --- request: proto → Ollama JSON ---------------------------------------------------


def request_body(request: ChatCompletionRequest, model: str, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": messages_to_ollama(request.messages),
        "stream": stream,
    }
    tools = tools_to_ollama(request)
    if tools:
        body["tools"] = tools
    fmt = request.response_format if request.HasField("response_format") else None
    if fmt is not None and fmt.type == "json_object":
        body["format"] = "json"
    elif fmt is not None and fmt.type == "json_schema" and fmt.json_schema:
        body["format"] = orjson.loads(fmt.json_schema)
    options = {
        option: getattr(request, field) for field, option in _OPTIONS if request.HasField(field)
    }
    if request.stop:
        options["stop"] = list(request.stop)
    if options:
        body["options"] = options
    reasoning = reasoning_of(request)
    if reasoning is not None:
        think = False if is_off(reasoning) else effort_of(reasoning)
        if think is not None:
            body["think"] = think
    return body


def messages_to_ollama(messages: Sequence[Message]) -> list[dict[str, Any]]:
    names: dict[str, str] = {}  # tool call id → function name, for the tool results after it
    out = []
    for message in messages:
        role = "system" if message.role == "developer" else message.role
        item: dict[str, Any] = {"role": role, "content": message.content}
        if message.parts:
            texts = [message.content] if message.content else []
            texts += [part.text for part in message.parts if part.WhichOneof("kind") == "text"]
            item["content"] = "\n".join(texts)  # one content string is all a message has
            images = [
                b64(part.image.data) for part in message.parts if part.WhichOneof("kind") == "image"
            ]
            if images:
                item["images"] = images
        if message.reasoning:
            item["thinking"] = "".join(block.text for block in message.reasoning)
        if message.tool_calls:
            item["tool_calls"] = [
                {"function": {"name": call.function.name, "arguments": arguments_object(call)}}
                for call in message.tool_calls
            ]
            names.update((call.id, call.function.name) for call in message.tool_calls)
        if message.role == "tool" and message.tool_call_id in names:
            item["tool_name"] = names[message.tool_call_id]
        out.append(item)
    return out


def tools_to_ollama(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    choice = tool_choice_of(request)
    if choice == ("mode", "none"):
        return []
    out = []
    for tool in request.tools:
        function = tool.function
        if choice is not None and choice[0] == "function" and function.name != choice[1]:
            continue
        spec: dict[str, Any] = {"name": function.name}
        if function.description:
            spec["description"] = function.description
        parameters = function_parameters(function)
        if parameters is not None:
            spec["parameters"] = parameters
        out.append({"type": "function", "function": spec})
    return out


# --- response: Ollama JSON → proto ---------------------------------------------------


def new_id() -> str:
    return f"ollama-{secrets.token_hex(12)}"


def new_tool_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?")


def created_seconds(created_at: Any) -> int:
    """Unix seconds of Ollama's RFC 3339 `created_at` (nanosecond fractions, any offset)."""
    match = _RFC3339.match(created_at) if isinstance(created_at, str) else None
    if match is None:
        return 0
    offset = match[2] if match[2] and match[2] != "Z" else "+00:00"
    return int(datetime.fromisoformat(match[1] + offset).timestamp())


def finish_reason(done_reason: Any, called_tools: bool) -> str:
    if called_tools:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def tool_calls_from_ollama(message: dict[str, Any]) -> list[ToolCall]:
    calls = []
    for call in message.get("tool_calls") or ():
        function = call["function"]
        tool_call = ToolCall(id=call.get("id") or new_tool_call_id(), type="function")
        tool_call.function.name = function["name"]
        tool_call.function.arguments = arguments_text(function.get("arguments"))
        calls.append(tool_call)
    return calls


def response_from_ollama(payload: dict[str, Any]) -> ChatCompletionResponse:
    if "error" in payload:
        raise ValueError(caller_message(message_in_error_payload(payload)))
    message = payload["message"]
    response = ChatCompletionResponse(
        id=new_id(),
        model=payload.get("model") or "",
        created=created_seconds(payload.get("created_at")),
    )
    choice = response.choices.add(index=0)
    choice.message.role = "assistant"
    choice.message.content = message.get("content") or ""
    if message.get("thinking"):
        choice.message.reasoning.append(ReasoningBlock(text=message["thinking"]))
    choice.message.tool_calls.extend(tool_calls_from_ollama(message))
    choice.finish_reason = finish_reason(
        payload.get("done_reason"), bool(choice.message.tool_calls)
    )
    set_usage(
        response.usage,
        int(payload.get("prompt_eval_count") or 0),
        int(payload.get("eval_count") or 0),
    )
    return response


class StreamTranslator:
    """Ollama stream objects → chunks; the `done: true` object becomes the last chunk."""

    def __init__(self, provider: str, keep_reasoning: bool = True) -> None:
        self.provider = provider
        self.keep_reasoning = keep_reasoning
        self.template = ChatCompletionChunk(id=new_id())
        self.started = False
        self.tool_calls = 0
        self.done = False

    def feed(self, payload: dict[str, Any]) -> list[ChatCompletionChunk]:
        if "error" in payload:
            raise UpstreamUnavailable(
                f"upstream {self.provider!r} failed mid-stream: "
                f"{caller_message(message_in_error_payload(payload))}"
            )
        chunks = []
        if not self.started:
            self.started = True
            self.template.model = payload.get("model") or ""
            self.template.created = created_seconds(payload.get("created_at"))
            chunks.append(text_chunk(self.template, "", role="assistant"))
        message = payload.get("message") or {}
        if message.get("thinking") and self.keep_reasoning:
            chunk = text_chunk(self.template, "")
            chunk.choices[0].delta.reasoning.add(index=0, text=message["thinking"])
            chunks.append(chunk)
        if message.get("content"):
            chunks.append(text_chunk(self.template, message["content"]))
        for call in tool_calls_from_ollama(message):
            chunk = text_chunk(self.template, "")
            piece = chunk.choices[0].delta.tool_calls.add(
                index=self.tool_calls, id=call.id, type="function"
            )
            piece.function.CopyFrom(call.function)
            self.tool_calls += 1
            chunks.append(chunk)
        if payload.get("done") is True:
            self.done = True
            chunks.append(
                finish_chunk(
                    self.template,
                    finish_reason(payload.get("done_reason"), self.tool_calls > 0),
                    int(payload.get("prompt_eval_count") or 0),
                    int(payload.get("eval_count") or 0),
                )
            )
        return chunks


def embed_response_from_ollama(
    payload: dict[str, Any], request: EmbedRequest, provider: str
) -> EmbedResponse:
    if "error" in payload:
        raise ValueError(caller_message(message_in_error_payload(payload)))
    as_bytes = wants_bytes(request)
    response = EmbedResponse(model=payload.get("model") or "")
    embeddings = [
        embedding_from(index, vector, as_bytes)
        for index, vector in enumerate(payload["embeddings"])
    ]
    tokens = int(payload.get("prompt_eval_count") or 0)
    response.usage.prompt_tokens = response.usage.total_tokens = tokens
    return complete(response, embeddings, len(request.inputs), provider)
