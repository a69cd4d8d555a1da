"""Anthropic's Messages API, the other way round: its JSON in, the service's messages;
the answers out as a `message` or its event stream.

The provider adapter (`providers/anthropic.py`) turns the service's request into a
Messages body and Anthropic's answer back; the door does the opposite, following the
same references (https://docs.claude.com/en/api/messages, .../build-with-claude/streaming,
.../extended-thinking, .../prompt-caching, .../api/errors):

- `system` (a string, or text blocks with cache marks) becomes system messages;
  `tool_result` blocks become `tool` messages (before the rest of their user turn);
  `thinking` and `redacted_thinking` blocks the assistant's reasoning blocks, with their
  signature or data byte for byte; `image` and `document` blocks (base64, url, plain
  text) the message's parts; `cache_control` the service's cache marks.
- `thinking` (`enabled` with `budget_tokens`, `disabled`; `display`) is the reasoning
  setting; `adaptive` leaves it to the model. `max_tokens` (required by Anthropic) and
  `stop_sequences`, `temperature`, `top_p`, `metadata.user_id` pass as the service's.
  `top_k` has no place in the service and is refused, as are server tools.
- The answer: content blocks in the service's order (reasoning, text, tool calls), the
  stop reason from the shared table (`end_turn`, `max_tokens`, `tool_use`, `refusal`),
  usage with `input_tokens` not counting the cache reads and writes (Anthropic's way).
- A stream: `message_start`, a `content_block_start` / `_delta` / `_stop` run per
  block, `message_delta` with the stop reason and the usage, `message_stop`; a failure
  after the first event is an `error` event, and no `message_stop` follows.
"""

from __future__ import annotations

from typing import Any

import orjson

from ai_service.doors.fields import (
    json_array,
    json_base64,
    json_count,
    json_number,
    json_object,
    json_text,
    refuse,
)
from ai_service.errors import quoted
from ai_service.providers.translation import ANTHROPIC_STOP_REASONS
from ai_service_protos.ai_service_pb2 import (
    CacheControl,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ContentPart,
    DocumentPart,
    ImagePart,
    Message,
    ReasoningBlock,
    ToolCall,
    Usage,
)

#: The service's finish reasons as Anthropic's stop reasons: the first of each in the table.
STOP_REASONS: dict[str, str] = {}
for _stop, _finish in ANTHROPIC_STOP_REASONS.items():
    STOP_REASONS.setdefault(_finish, _stop)
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


def _mark(block: dict[str, Any], path: str) -> CacheControl | None:
    mark = block.get("cache_control")
    if mark is None:
        return None
    mark = json_object(mark, f"{path}.cache_control")
    return CacheControl(type=str(mark.get("type") or ""), ttl=str(mark.get("ttl") or ""))


# --- Messages JSON → proto ---------------------------------------------------------------


def messages_request(body: dict[str, Any]) -> tuple[ChatCompletionRequest, bool]:
    """(the request, whether it is streamed)."""
    request = ChatCompletionRequest(model=json_text(body.get("model", ""), "model"))
    if body.get("max_tokens") is None:
        raise refuse("max_tokens", "is required")
    request.max_tokens = json_count(body["max_tokens"], "max_tokens")
    system = body.get("system")
    if isinstance(system, str):
        if system:
            request.messages.add(role="system", content=system)
    elif system is not None:
        for i, block in enumerate(json_array(system, "system")):
            block = json_object(block, f"system[{i}]")
            message = request.messages.add(
                role="system", content=json_text(block.get("text"), f"system[{i}].text")
            )
            mark = _mark(block, f"system[{i}]")
            if mark is not None:
                message.cache_control.CopyFrom(mark)
    for i, item in enumerate(json_array(body.get("messages"), "messages")):
        _turn_into(request, json_object(item, f"messages[{i}]"), f"messages[{i}]")
    if body.get("top_k") is not None:
        raise refuse("top_k", "is not supported: use temperature or top_p")
    for field in ("temperature", "top_p"):
        if body.get(field) is not None:
            setattr(request, field, json_number(body[field], field))
    stops = body.get("stop_sequences")
    if stops is not None:
        request.stop.extend(
            json_text(s, f"stop_sequences[{i}]")
            for i, s in enumerate(json_array(stops, "stop_sequences"))
        )
    metadata = body.get("metadata")
    if metadata is not None:
        user = json_object(metadata, "metadata").get("user_id")
        if user is not None:
            request.user = json_text(user, "metadata.user_id")
    for i, tool in enumerate(body.get("tools") or ()):
        _tool_into(request, json_object(tool, f"tools[{i}]"), f"tools[{i}]")
    if body.get("tool_choice") is not None:
        _tool_choice_into(request, json_object(body["tool_choice"], "tool_choice"))
    if body.get("thinking") is not None:
        _thinking_into(request, json_object(body["thinking"], "thinking"))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise refuse("stream", "must be true or false")
    return request, bool(stream)


def _turn_into(request: ChatCompletionRequest, item: dict[str, Any], path: str) -> None:
    """One user or assistant turn: its tool results as tool messages, then the rest."""
    role = item.get("role")
    if role not in ("user", "assistant"):
        raise refuse(f"{path}.role", f"is {quoted(str(role))}; expected user or assistant")
    content = item.get("content")
    if isinstance(content, str):
        request.messages.add(role=role, content=content)
        return
    message = Message(role=role)
    for j, value in enumerate(json_array(content, f"{path}.content")):
        block_path = f"{path}.content[{j}]"
        block = json_object(value, block_path)
        kind = block.get("type")
        if kind == "tool_result":
            if role != "user":
                raise refuse(f"{block_path}.type", "tool results go in a user turn")
            request.messages.append(_tool_result(block, block_path))
        elif kind == "tool_use":
            call = ToolCall(id=json_text(block.get("id"), f"{block_path}.id"), type="function")
            call.function.name = json_text(block.get("name"), f"{block_path}.name")
            call.function.arguments = orjson.dumps(block.get("input") or {}).decode()
            message.tool_calls.append(call)
        elif kind == "thinking":
            message.reasoning.append(
                ReasoningBlock(
                    text=json_text(block.get("thinking", ""), f"{block_path}.thinking"),
                    signature=json_text(block.get("signature", ""), f"{block_path}.signature"),
                )
            )
        elif kind == "redacted_thinking":
            data = json_text(block.get("data"), f"{block_path}.data")
            message.reasoning.append(ReasoningBlock(redacted_data=data))
        else:
            _content_into(message, block, block_path)
    if message.content or message.parts or message.tool_calls or message.reasoning:
        request.messages.append(message)


def _content_into(message: Message, block: dict[str, Any], path: str) -> None:
    """A text, image or document block: the first text is the message's content."""
    kind = block.get("type")
    mark = _mark(block, path)
    if kind == "text":
        text = json_text(block.get("text"), f"{path}.text")
        if not message.content and not message.parts:
            message.content = text
            if mark is not None:
                message.cache_control.CopyFrom(mark)
            return
        part = ContentPart(text=text)
    elif kind == "image":
        part = ContentPart(image=_image(json_object(block.get("source"), f"{path}.source"), path))
    elif kind == "document":
        document = _document(json_object(block.get("source"), f"{path}.source"), path)
        if block.get("title") is not None:
            document.name = json_text(block["title"], f"{path}.title")
        part = ContentPart(document=document)
    else:
        raise refuse(f"{path}.type", f"is {quoted(str(kind))}; not a supported content block")
    if mark is not None:
        part.cache_control.CopyFrom(mark)
    message.parts.append(part)


def _image(source: dict[str, Any], path: str) -> ImagePart:
    kind = source.get("type")
    if kind == "url":
        return ImagePart(url=json_text(source.get("url"), f"{path}.source.url"))
    if kind == "base64":
        return ImagePart(
            data=json_base64(source.get("data"), f"{path}.source.data"),
            media_type=json_text(source.get("media_type", ""), f"{path}.source.media_type"),
        )
    raise refuse(f"{path}.source.type", f"is {quoted(str(kind))}; expected base64 or url")


def _document(source: dict[str, Any], path: str) -> DocumentPart:
    kind = source.get("type")
    if kind == "url":
        return DocumentPart(url=json_text(source.get("url"), f"{path}.source.url"))
    if kind == "base64":
        return DocumentPart(
            data=json_base64(source.get("data"), f"{path}.source.data"),
            media_type=json_text(source.get("media_type", ""), f"{path}.source.media_type"),
        )
    if kind == "text":
        text = json_text(source.get("data"), f"{path}.source.data")
        return DocumentPart(data=text.encode(), media_type="text/plain")
    raise refuse(f"{path}.source.type", f"is {quoted(str(kind))}; expected base64, url or text")


def _tool_result(block: dict[str, Any], path: str) -> Message:
    message = Message(role="tool", tool_call_id=json_text(block.get("tool_use_id"), f"{path}.id"))
    content = block.get("content")
    if isinstance(content, str):
        message.content = content
    elif content is not None:
        for k, item in enumerate(json_array(content, f"{path}.content")):
            _content_into(
                message, json_object(item, f"{path}.content[{k}]"), f"{path}.content[{k}]"
            )
    mark = _mark(block, path)
    if mark is not None and not message.HasField("cache_control"):
        message.cache_control.CopyFrom(mark)
    return message


def _tool_into(request: ChatCompletionRequest, tool: dict[str, Any], path: str) -> None:
    if tool.get("type") not in (None, "custom"):
        raise refuse(
            f"{path}.type", f"is {quoted(str(tool['type']))}; server tools are not supported"
        )
    out = request.tools.add(type="function")
    out.function.name = json_text(tool.get("name"), f"{path}.name")
    if tool.get("description") is not None:
        out.function.description = json_text(tool["description"], f"{path}.description")
    out.function.parameters_json = orjson.dumps(tool.get("input_schema") or {}).decode()
    mark = _mark(tool, path)
    if mark is not None:
        out.cache_control.CopyFrom(mark)


def _tool_choice_into(request: ChatCompletionRequest, choice: dict[str, Any]) -> None:
    kind = choice.get("type")
    if kind == "tool":
        request.tool_choice.function = json_text(choice.get("name"), "tool_choice.name")
    elif kind in _TOOL_CHOICES:
        request.tool_choice.mode = _TOOL_CHOICES[kind]
    else:
        raise refuse(
            "tool_choice.type", f"is {quoted(str(kind))}; expected auto, any, tool or none"
        )


def _thinking_into(request: ChatCompletionRequest, thinking: dict[str, Any]) -> None:
    kind = thinking.get("type")
    reasoning = request.reasoning
    if kind == "enabled":
        reasoning.budget_tokens = json_count(
            thinking.get("budget_tokens"), "thinking.budget_tokens"
        )
    elif kind == "disabled":
        reasoning.off = True
    elif kind != "adaptive":
        raise refuse("thinking.type", f"is {quoted(str(kind))}; expected enabled or disabled")
    display = thinking.get("display")
    if display is not None:
        if display not in ("summarized", "omitted"):
            raise refuse("thinking.display", "expected summarized or omitted")
        reasoning.include_text = display == "summarized"
    if kind == "adaptive" and display is None:
        request.ClearField("reasoning")


# --- proto → Messages JSON ---------------------------------------------------------------


def usage_json(usage: Usage) -> dict[str, int]:
    """Anthropic's usage: `input_tokens` leaves out the prompt-cache reads and writes."""
    cached, written = usage.cached_tokens, usage.cache_write_tokens
    return {
        "input_tokens": max(usage.prompt_tokens - cached - written, 0),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
    }


def stop_reason(finish_reason: str) -> str:
    return STOP_REASONS.get(finish_reason, "end_turn")


def message_json(response: ChatCompletionResponse) -> bytes:
    content: list[dict[str, Any]] = []
    finish = "stop"
    if response.choices:
        choice = response.choices[0]
        finish = choice.finish_reason or "stop"
        message = choice.message
        for block in message.reasoning:
            if block.redacted_data:
                content.append({"type": "redacted_thinking", "data": block.redacted_data})
            else:
                content.append(
                    {"type": "thinking", "thinking": block.text, "signature": block.signature}
                )
        if message.content:
            content.append({"type": "text", "text": message.content})
        for call in message.tool_calls:
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.function.name,
                    "input": _arguments(call.function.arguments),
                }
            )
    out: dict[str, Any] = {
        "id": response.id,
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": None,
        "usage": usage_json(response.usage),
    }
    if response.cost.currency:
        out["cost"] = {"amount": response.cost.amount, "currency": response.cost.currency}
    return orjson.dumps(out)


def _arguments(text: str) -> Any:
    try:
        return orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {}  # a model that wrote broken JSON: Anthropic's `input` is an object


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class EventWriter:
    """A stream's chunks as Anthropic's events, one content block open at a time.

    The service's chunks say what they add (text, a piece of reasoning block r, a piece
    of tool call t); a change of kind or index closes the open block and starts the next.
    """

    __slots__ = ("_block", "_index", "_tools")

    def __init__(self) -> None:
        #: The open block: ("text", 0), ("reasoning", r), ("tool", t); None when none is.
        self._block: tuple[str, int] | None = None
        self._index = -1  # the content block index of the open block
        self._tools: set[int] = set()

    @staticmethod
    def start(first: ChatCompletionChunk) -> bytes:
        message: dict[str, Any] = {
            "id": first.id,
            "type": "message",
            "role": "assistant",
            "model": first.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event(b"message_start", {"type": "message_start", "message": message})

    def _open(self, block: tuple[str, int], content_block: dict[str, Any]) -> bytes:
        events = self._close()
        self._block = block
        self._index += 1
        start = {
            "type": "content_block_start",
            "index": self._index,
            "content_block": content_block,
        }
        return events + _event(b"content_block_start", start)

    def _close(self) -> bytes:
        if self._block is None:
            return b""
        self._block = None
        return _event(b"content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        data = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return _event(b"content_block_delta", data)

    def text(self, text: str) -> bytes:
        events = b""
        if self._block != ("text", 0):
            events = self._open(("text", 0), {"type": "text", "text": ""})
        return events + self._delta({"type": "text_delta", "text": text})

    def event(self, chunk: ChatCompletionChunk) -> bytes:
        """The events of one chunk of choice 0 (Anthropic's answers have one)."""
        events = b""
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            for piece in delta.reasoning:
                events += self._reasoning(piece)
            if delta.content:
                events += self.text(delta.content)
            for call in delta.tool_calls:
                events += self._tool(call)
            if choice.finish_reason:
                events += self._finish(choice.finish_reason, chunk)
        return events

    def _reasoning(self, piece: Any) -> bytes:
        events = b""
        if piece.redacted_data:
            events += self._open(
                ("reasoning", piece.index),
                {"type": "redacted_thinking", "data": piece.redacted_data},
            )
            return events
        if self._block != ("reasoning", piece.index):
            events += self._open(
                ("reasoning", piece.index), {"type": "thinking", "thinking": "", "signature": ""}
            )
        if piece.text:
            events += self._delta({"type": "thinking_delta", "thinking": piece.text})
        if piece.signature:
            events += self._delta({"type": "signature_delta", "signature": piece.signature})
        return events

    def _tool(self, call: Any) -> bytes:
        events = b""
        if call.index not in self._tools or self._block != ("tool", call.index):
            self._tools.add(call.index)
            block = {"type": "tool_use", "id": call.id, "name": call.function.name, "input": {}}
            events += self._open(("tool", call.index), block)
        if call.function.arguments:
            events += self._delta(
                {"type": "input_json_delta", "partial_json": call.function.arguments}
            )
        return events

    def _finish(self, finish_reason: str, chunk: ChatCompletionChunk) -> bytes:
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(finish_reason), "stop_sequence": None},
            "usage": usage_json(chunk.usage),
        }
        if chunk.cost.currency:
            delta["cost"] = {"amount": chunk.cost.amount, "currency": chunk.cost.currency}
        return self._close() + _event(b"message_delta", delta)

    @staticmethod
    def stop() -> bytes:
        return _event(b"message_stop", {"type": "message_stop"})

    @staticmethod
    def error(error: dict[str, Any]) -> bytes:
        return _event(b"error", error)
