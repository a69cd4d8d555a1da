"""OpenAI's API, the other way round: its JSON in, the service's messages; the answers out.

The provider adapter (`providers/openai.py`) turns the service's request into OpenAI's
and OpenAI's answer back; the door does the opposite, following the same reference
(https://platform.openai.com/docs/api-reference/chat/create, .../chat-streaming,
.../embeddings, .../models): a `ChatCompletionRequest` from a chat-completions body, and
`chat.completion` objects, `chat.completion.chunk` events and embedding lists from the
service's answers. The proto's field names follow OpenAI's on purpose, so most fields
pass by name.

What the service carries beyond OpenAI's shapes travels in fields OpenAI's SDKs keep
as they are (they accept unknown fields): the reasoning text as `reasoning_content`
(as DeepSeek and vLLM send it) and the reasoning blocks, with the signatures a tool loop
with Anthropic's thinking must send back, as `reasoning` on the assistant message
(taken back the same way); the call's cost as `cost`; an answer from the gateway's
cache as `cached`. A request may carry the service's own `reasoning` setting and
`options` (cache bypass and lifetime) beside OpenAI's fields (the SDKs' `extra_body`).

`reasoning_effort` maps onto the service's three efforts (`minimal` is low, `xhigh` and
`max` are high, `none` is off). What the service cannot carry is refused naming the
field, never dropped in silence when it would change the answer: `n` above 1,
`logprobs`, `logit_bias`, audio output, predicted outputs, uploaded files by id, the
deprecated `functions`, token arrays as embedding input. Fields that change nothing of
the answer (`store`, `service_tier`, `parallel_tool_calls`, `prompt_cache_key`, …) are
let through.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import orjson

from ai_service.doors.fields import (
    json_array,
    json_base64,
    json_flag,
    json_integer,
    json_number,
    json_object,
    json_text,
    refuse,
)
from ai_service.errors import quoted
from ai_service.providers.translation import SYSTEM_ROLES
from ai_service_protos.ai_service_pb2 import (
    AudioPart,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ContentPart,
    Cost,
    DocumentPart,
    EmbedRequest,
    EmbedResponse,
    ImagePart,
    ListModelsResponse,
    Message,
    ReasoningBlock,
    ToolCall,
    Usage,
)

#: OpenAI's `reasoning_effort` values as the service's efforts; None: reasoning off.
EFFORTS: dict[str, str | None] = {
    "none": None,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}
_ROLES = SYSTEM_ROLES | {"user", "assistant", "tool"}
_SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
#: Fields the service has no place for, refused when set to anything that would change
#: the answer: (field, why).
_UNCARRIED = (
    ("logit_bias", "token biases are not supported"),
    ("logprobs", "log probabilities are not supported"),
    ("top_logprobs", "log probabilities are not supported"),
    ("audio", "audio output is not supported"),
    ("prediction", "predicted outputs are not supported"),
    ("functions", "is deprecated: send `tools`"),
    ("function_call", "is deprecated: send `tool_choice`"),
    ("web_search_options", "web search is not supported"),
)


# --- chat completions: OpenAI JSON → proto ---------------------------------------------


def chat_request(body: dict[str, Any]) -> tuple[ChatCompletionRequest, bool, bool]:
    """(the request, whether it is streamed, whether the stream ends with a usage chunk)."""
    request = ChatCompletionRequest(model=json_text(body.get("model", ""), "model"))
    messages = json_array(body.get("messages"), "messages")
    request.messages.extend(message_from(m, f"messages[{i}]") for i, m in enumerate(messages))
    for field, why in _UNCARRIED:
        value = body.get(field)
        if value not in (None, False, {}, []):
            raise refuse(field, why)
    n = body.get("n")
    if n is not None and n != 1:
        raise refuse("n", "only 1 choice per call is supported")
    if "tools" in body and body["tools"] is not None:
        for i, tool in enumerate(json_array(body["tools"], "tools")):
            _tool_into(request, json_object(tool, f"tools[{i}]"), f"tools[{i}]")
    if body.get("tool_choice") is not None:
        _tool_choice_into(request, body["tool_choice"])
    maximum = body.get("max_completion_tokens")
    if maximum is None:
        maximum = body.get("max_tokens")
    if maximum is not None:
        request.max_tokens = json_integer(maximum, "max_tokens")
    for field in _SAMPLING:
        value = body.get(field)
        if value is not None:
            setattr(request, field, json_number(value, field))
    if body.get("seed") is not None:
        seed = body["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise refuse("seed", "must be an integer")
        request.seed = seed
    stop = body.get("stop")
    if isinstance(stop, str):
        request.stop.append(stop)
    elif stop is not None:
        request.stop.extend(
            json_text(s, f"stop[{i}]") for i, s in enumerate(json_array(stop, "stop"))
        )
    user = body.get("user") or body.get("safety_identifier")
    if user is not None:
        request.user = json_text(user, "user")
    metadata = body.get("metadata")
    if metadata is not None:
        for key, value in json_object(metadata, "metadata").items():
            request.metadata[key] = json_text(value, f"metadata.{key}")
    if body.get("response_format") is not None:
        _response_format_into(request, json_object(body["response_format"], "response_format"))
    _reasoning_into(request, body)
    options = body.get("options")
    if options is not None:
        _options_into(request, json_object(options, "options"))
    stream = body.get("stream")
    streaming = stream is not None and json_flag(stream, "stream")
    include_usage = False
    if streaming and body.get("stream_options") is not None:
        usage = json_object(body["stream_options"], "stream_options").get("include_usage")
        include_usage = usage is not None and json_flag(usage, "stream_options.include_usage")
    return request, streaming, include_usage


def message_from(value: Any, path: str) -> Message:
    item = json_object(value, path)
    role = json_text(item.get("role", ""), f"{path}.role")
    if role not in _ROLES:
        raise refuse(f"{path}.role", f"is {quoted(role)}; expected one of {sorted(_ROLES)}")
    message = Message(role=role)
    content = item.get("content")
    if isinstance(content, str):
        message.content = content
    elif content is not None:
        _parts_into(message, json_array(content, f"{path}.content"), f"{path}.content")
    refusal = item.get("refusal")
    if refusal and not message.content:  # an assistant turn that refused, sent back
        message.content = json_text(refusal, f"{path}.refusal")
    if item.get("name") is not None:
        message.name = json_text(item["name"], f"{path}.name")
    if item.get("tool_call_id") is not None:
        message.tool_call_id = json_text(item["tool_call_id"], f"{path}.tool_call_id")
    for i, call in enumerate(item.get("tool_calls") or ()):
        message.tool_calls.append(_tool_call(json_object(call, f"{path}.tool_calls[{i}]")))
    for i, block in enumerate(item.get("reasoning") or ()):
        block = json_object(block, f"{path}.reasoning[{i}]")
        message.reasoning.append(
            ReasoningBlock(
                text=block.get("text") or "",
                signature=block.get("signature") or "",
                redacted_data=block.get("redacted_data") or "",
            )
        )
    return message


def _tool_call(call: dict[str, Any]) -> ToolCall:
    function = call.get("function") or {}
    out = ToolCall(id=str(call.get("id") or ""), type=str(call.get("type") or "function"))
    out.function.name = str(function.get("name") or "")
    arguments = function.get("arguments")
    out.function.arguments = (
        arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode()
    )
    return out


def _parts_into(message: Message, parts: list[Any], path: str) -> None:
    """Content parts: a leading text part is the message's `content`, the rest its parts
    (the service's message puts `content` first)."""
    for i, value in enumerate(parts):
        part = json_object(value, f"{path}[{i}]")
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = json_text(part.get(kind), f"{path}[{i}].{kind}")
            if i == 0:
                message.content = text
            else:
                message.parts.append(ContentPart(text=text))
        elif kind == "image_url":
            message.parts.append(ContentPart(image=_image(part, f"{path}[{i}].image_url")))
        elif kind == "input_audio":
            audio = json_object(part.get("input_audio"), f"{path}[{i}].input_audio")
            data = json_base64(audio.get("data"), f"{path}[{i}].input_audio.data")
            fmt = json_text(audio.get("format", ""), f"{path}[{i}].input_audio.format")
            message.parts.append(ContentPart(audio=AudioPart(data=data, format=fmt)))
        elif kind == "file":
            message.parts.append(ContentPart(document=_document(part, f"{path}[{i}].file")))
        else:
            raise refuse(f"{path}[{i}].type", f"is {quoted(str(kind))}; not a content part")


def _image(part: dict[str, Any], path: str) -> ImagePart:
    spec = part.get("image_url")
    if isinstance(spec, str):  # some clients send the URL alone
        spec = {"url": spec}
    spec = json_object(spec, path)
    url = json_text(spec.get("url", ""), f"{path}.url")
    image = ImagePart(detail=str(spec.get("detail") or ""))
    if url.startswith("data:"):
        image.media_type, image.data = _data_url(url, f"{path}.url")
    else:
        image.url = url
    return image


def _document(part: dict[str, Any], path: str) -> DocumentPart:
    spec = json_object(part.get("file"), path)
    if spec.get("file_id"):
        raise refuse(f"{path}.file_id", "uploaded files are not supported: send file_data")
    data = json_text(spec.get("file_data", ""), f"{path}.file_data")
    document = DocumentPart(name=str(spec.get("filename") or ""))
    if data.startswith("data:"):
        document.media_type, document.data = _data_url(data, f"{path}.file_data")
    else:  # bare base64: the type from the name
        document.data = json_base64(data, f"{path}.file_data")
        document.media_type = "text/plain" if document.name.endswith(".txt") else "application/pdf"
    return document


def _data_url(url: str, path: str) -> tuple[str, bytes]:
    """(media type, bytes) of a `data:<type>;base64,<data>` URL."""
    header, comma, data = url.partition(",")
    media_type, _, encoding = header[len("data:") :].partition(";")
    if not comma or encoding != "base64":
        raise refuse(path, "a data URL must be data:<media type>;base64,<data>")
    return media_type, json_base64(data, path)


def _tool_into(request: ChatCompletionRequest, tool: dict[str, Any], path: str) -> None:
    kind = tool.get("type", "function")
    if kind != "function":
        raise refuse(f"{path}.type", f"is {quoted(str(kind))}; only function tools are supported")
    function = json_object(tool.get("function"), f"{path}.function")
    out = request.tools.add(type="function").function
    out.name = json_text(function.get("name", ""), f"{path}.function.name")
    if function.get("description") is not None:
        out.description = json_text(function["description"], f"{path}.function.description")
    if function.get("parameters") is not None:
        out.parameters_json = orjson.dumps(function["parameters"]).decode()
    if function.get("strict") is not None:
        out.strict = json_flag(function["strict"], f"{path}.function.strict")


def _tool_choice_into(request: ChatCompletionRequest, choice: Any) -> None:
    if isinstance(choice, str):
        request.tool_choice.mode = choice
        return
    choice = json_object(choice, "tool_choice")
    if choice.get("type") != "function":
        raise refuse("tool_choice.type", "only a function may be chosen")
    function = json_object(choice.get("function"), "tool_choice.function")
    request.tool_choice.function = json_text(function.get("name", ""), "tool_choice.function.name")


def _response_format_into(request: ChatCompletionRequest, spec: dict[str, Any]) -> None:
    fmt = request.response_format
    fmt.type = json_text(spec.get("type", ""), "response_format.type")
    if fmt.type != "json_schema":
        return
    schema = json_object(spec.get("json_schema"), "response_format.json_schema")
    fmt.schema_name = str(schema.get("name") or "")
    if schema.get("schema") is not None:
        fmt.json_schema = orjson.dumps(schema["schema"]).decode()
    if schema.get("strict") is not None:
        fmt.strict = json_flag(schema["strict"], "response_format.json_schema.strict")


def _reasoning_into(request: ChatCompletionRequest, body: dict[str, Any]) -> None:
    """`reasoning_effort`, or the service's own `reasoning` setting."""
    setting = body.get("reasoning")
    if setting is not None:
        setting = json_object(setting, "reasoning")
        reasoning = request.reasoning
        if setting.get("effort") is not None:
            reasoning.effort = json_text(setting["effort"], "reasoning.effort")
        elif setting.get("budget_tokens") is not None:
            reasoning.budget_tokens = json_integer(
                setting["budget_tokens"], "reasoning.budget_tokens"
            )
        elif setting.get("off") is not None:
            reasoning.off = json_flag(setting["off"], "reasoning.off")
        if setting.get("include_text") is not None:
            reasoning.include_text = json_flag(setting["include_text"], "reasoning.include_text")
    effort = body.get("reasoning_effort")
    if effort is None:
        return
    effort = json_text(effort, "reasoning_effort")
    if effort not in EFFORTS:
        raise refuse("reasoning_effort", f"is {quoted(effort)}; expected one of {list(EFFORTS)}")
    level = EFFORTS[effort]
    if level is None:
        request.reasoning.off = True
    else:
        request.reasoning.effort = level


def _options_into(request: ChatCompletionRequest, options: dict[str, Any]) -> None:
    if options.get("bypass_cache") is not None:
        request.options.bypass_cache = json_flag(options["bypass_cache"], "options.bypass_cache")
    ttl = options.get("cache_ttl_seconds")
    if ttl is not None:
        seconds = json_integer(ttl, "options.cache_ttl_seconds")
        if seconds < 0:
            raise refuse("options.cache_ttl_seconds", "must not be negative")
        request.options.cache_ttl_seconds = seconds


# --- chat completions: proto → OpenAI JSON ---------------------------------------------


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def cost_json(cost: Cost) -> dict[str, Any] | None:
    if not cost.currency:
        return None
    out: dict[str, Any] = {"amount": cost.amount, "currency": cost.currency}
    if cost.estimated:
        out["estimated"] = True
    if cost.unpriced:
        out["unpriced"] = True
    return out


def _reasoning_json(blocks: Iterable[ReasoningBlock]) -> list[dict[str, str]]:
    out = []
    for block in blocks:
        item = {}
        for name in ("text", "signature", "redacted_data"):
            value = getattr(block, name)
            if value:
                item[name] = value
        out.append(item)
    return out


def completion_json(response: ChatCompletionResponse) -> bytes:
    choices = []
    for choice in response.choices:
        source = choice.message
        message: dict[str, Any] = {
            "role": "assistant",
            "content": source.content if source.content or not source.tool_calls else None,
            "refusal": None,
        }
        if source.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": call.type or "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
                for call in source.tool_calls
            ]
        if source.reasoning:
            text = "".join(block.text for block in source.reasoning)
            if text:
                message["reasoning_content"] = text
            message["reasoning"] = _reasoning_json(source.reasoning)
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "finish_reason": choice.finish_reason or "stop",
                "logprobs": None,
            }
        )
    out: dict[str, Any] = {
        "id": response.id,
        "object": "chat.completion",
        "created": response.created,
        "model": response.model,
        "choices": choices,
        "usage": usage_json(response.usage),
    }
    cost = cost_json(response.cost)
    if cost is not None:
        out["cost"] = cost
    if response.cached:
        out["cached"] = True
    return orjson.dumps(out)


class ChunkWriter:
    """A stream's chunks as OpenAI's SSE events, `data: {…}` each, ending `data: [DONE]`.

    The service's last chunk carries the finish reasons and the usage together; OpenAI
    sends the finish in one chunk and, when `stream_options.include_usage` asks for it,
    the usage in a chunk of its own (with no choices) before `[DONE]`, every other chunk
    then saying `"usage": null`.
    """

    __slots__ = ("_head", "_include_usage", "_usage_null")

    def __init__(self, first: ChatCompletionChunk, include_usage: bool) -> None:
        head = orjson.dumps(
            {
                "id": first.id,
                "object": "chat.completion.chunk",
                "created": first.created,
                "model": first.model,
            }
        )
        # Every event starts alike: its fields, then its choices.
        self._head = b"data: " + head[:-1] + b',"choices":'
        self._include_usage = include_usage
        self._usage_null = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def event(self, chunk: ChatCompletionChunk) -> bytes:
        """The chunk's event(s): its choices, then its usage in one of its own if asked."""
        choices = [_choice_json(choice) for choice in chunk.choices]
        events = self._head + orjson.dumps(choices) + self._usage_null
        if chunk.HasField("usage") and self._include_usage:
            tail: dict[str, Any] = {"usage": usage_json(chunk.usage)}
            cost = cost_json(chunk.cost)
            if cost is not None:
                tail["cost"] = cost
            events += self._head + b"[]," + orjson.dumps(tail)[1:] + b"\n\n"
        return events

    def text_event(self, index: int, text: str) -> bytes:
        """The common event: `text` added to choice `index`, and nothing else."""
        return (
            self._head
            + b'[{"index":%d,"delta":{"content":' % index
            + orjson.dumps(text)
            + b'},"logprobs":null,"finish_reason":null}]'
            + self._usage_null
        )

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"

    @staticmethod
    def error(error: dict[str, Any]) -> bytes:
        """A failure after the first chunk, as OpenAI reports one mid-stream."""
        return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


def _choice_json(choice: Any) -> dict[str, Any]:
    source = choice.delta
    delta: dict[str, Any] = {}
    if source.role:
        delta["role"] = source.role
        delta["content"] = source.content
    elif source.content:
        delta["content"] = source.content
    if source.tool_calls:
        calls = []
        for piece in source.tool_calls:
            call: dict[str, Any] = {"index": piece.index}
            if piece.id:
                call["id"] = piece.id
                call["type"] = piece.type or "function"
            function: dict[str, str] = {"arguments": piece.function.arguments}
            if piece.function.name:
                function["name"] = piece.function.name
            call["function"] = function
            calls.append(call)
        delta["tool_calls"] = calls
    if source.reasoning:
        text = "".join(piece.text for piece in source.reasoning)
        if text:
            delta["reasoning_content"] = text
        delta["reasoning"] = [
            {"index": piece.index, **item}
            for piece, item in zip(source.reasoning, _reasoning_json(source.reasoning), strict=True)
        ]
    return {
        "index": choice.index,
        "delta": delta,
        "logprobs": None,
        "finish_reason": choice.finish_reason or None,
    }


def text_only(chunk: ChatCompletionChunk) -> tuple[int, str] | None:
    """(choice, text) of a chunk that only adds text, for `ChunkWriter.text_event`."""
    if len(chunk.choices) != 1 or chunk.HasField("usage"):
        return None
    choice = chunk.choices[0]
    delta = choice.delta
    if choice.finish_reason or delta.role or delta.tool_calls or delta.reasoning:
        return None
    return choice.index, delta.content


# --- embeddings and models ------------------------------------------------------------------


def embed_request(body: dict[str, Any]) -> EmbedRequest:
    request = EmbedRequest(model=json_text(body.get("model", ""), "model"))
    inputs = body.get("input")
    if isinstance(inputs, str):
        request.inputs.append(inputs)
    else:
        for i, text in enumerate(json_array(inputs, "input")):
            if not isinstance(text, str):
                raise refuse(f"input[{i}]", "token arrays are not supported: send text")
            request.inputs.append(text)
    encoding = body.get("encoding_format")
    if encoding is not None:
        request.encoding_format = json_text(encoding, "encoding_format")
    if body.get("dimensions") is not None:
        request.dimensions = json_integer(body["dimensions"], "dimensions")
    if body.get("user") is not None:
        request.user = json_text(body["user"], "user")
    return request


def embeddings_json(response: EmbedResponse) -> bytes:
    data = [
        {
            "object": "embedding",
            "index": item.index,
            "embedding": base64.b64encode(item.data).decode() if item.data else list(item.values),
        }
        for item in response.embeddings
    ]
    out: dict[str, Any] = {
        "object": "list",
        "data": data,
        "model": response.model,
        "usage": {
            "prompt_tokens": response.usage.prompt_tokens,
            "total_tokens": response.usage.total_tokens,
        },
    }
    cost = cost_json(response.cost)
    if cost is not None:
        out["cost"] = cost
    return orjson.dumps(out)


def models_json(models: ListModelsResponse) -> bytes:
    return orjson.dumps({"object": "list", "data": [_model(m) for m in models.models]})


def model_json(models: ListModelsResponse, name: str) -> bytes | None:
    for model in models.models:
        if model.id == name:
            return orjson.dumps(_model(model))
    return None


def _model(model: Any) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": 0, "owned_by": model.provider}
