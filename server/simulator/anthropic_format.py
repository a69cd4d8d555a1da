"""The Anthropic Messages wire format: `POST /v1/messages`, unary and SSE.

Follows Anthropic's API reference:
- https://docs.claude.com/en/api/messages (request; the `Message` object with `content`
  blocks, `stop_reason`, `stop_sequence`, `usage`)
- https://docs.claude.com/en/docs/build-with-claude/streaming (`message_start`,
  `content_block_start`, `ping`, `content_block_delta` with `text_delta` /
  `input_json_delta`, `content_block_stop`, `message_delta`, `message_stop`)
- https://docs.claude.com/en/api/errors (`{"type": "error", "error": {"type", "message"},
  "request_id"}`, one error type per status, 529 `overloaded_error`)
- https://docs.claude.com/en/api/versioning (`anthropic-version` is required)

The answer is planned from the same conversation in OpenAI's shape (`to_planner`), so one
conversation gets the same answer on every format: `system` becomes a system message,
`tool_use` blocks an assistant's `tool_calls` (arguments: compact JSON of `input`), each
`tool_result` block a `tool` message, `stop_sequences` the `stop`, and `input_schema` a
function's `parameters`. Tool-use ids are `toolu_` + the planner's hex digits.

Content (https://docs.claude.com/en/docs/build-with-claude/vision, .../pdf-support,
.../extended-thinking, .../prompt-caching): `image` and `document` blocks (`base64`, `url`
and, for documents, `text` sources) are checked and described in the answer;
`thinking: {"type": "enabled", "budget_tokens"}` (at least 1024, below `max_tokens`) makes
the model reason: a `thinking` block with a `signature` (streamed as `thinking_delta`s and
one `signature_delta`), and with `/redacted` in the user's text a `redacted_thinking`
block before it. Thinking blocks sent back are checked: a signature or redacted data the
simulator did not make is refused 400, and with thinking on an assistant turn that calls
a tool must start with its thinking (as the API requires). `cache_control` marks on
tools, system blocks and message blocks (at most 4) make prefixes: the longest marked
prefix seen before is read (`cache_read_input_tokens`), the rest up to the last mark
written (`cache_creation_input_tokens`); `input_tokens` is what remains.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import os
from collections.abc import Mapping
from typing import Any, Final

import orjson

from .content import (
    PromptCache,
    effort_of_budget,
    redact,
    redacted_ok,
    sign,
    signature_ok,
)
from .openai_format import ARGUMENT_PIECE_CHARS
from .planner import ReplyPlan, count_words, message_text, plan_reply
from .wire import ApiError, StreamEvent, pieces

ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_FAULT_MESSAGES: Final = {
    400: "Invalid request (simulated).",
    401: "invalid x-api-key",
    402: "Your credit balance is too low to access the Anthropic API (simulated).",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found (simulated).",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of requests has exceeded your per-minute rate limit (simulated).",
    500: "Internal server error (simulated).",
    504: "Request timed out (simulated).",
    529: "Overloaded",
}
_STOP_REASONS: Final = {"length": "max_tokens", "tool_calls": "tool_use"}
_IMAGE_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/webp")
_BLOCK_TYPES: Final = frozenset(
    {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}
)
MIN_THINKING_BUDGET: Final = 1024
MAX_CACHE_MARKS: Final = 4
_ID_PREFIX: Final = os.urandom(6).hex()
_ids = itertools.count(1)


def _invalid(message: str) -> ApiError:
    return ApiError(400, message)


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class AnthropicFormat:
    """`POST /v1/messages` as Anthropic documents it."""

    path = "/v1/messages"
    stream_content_type = "text/event-stream; charset=utf-8"

    def __init__(self, cache: PromptCache | None = None) -> None:
        self.cache = cache or PromptCache()

    # -- requests ---------------------------------------------------------------------------

    def check_headers(self, headers: Mapping[str, str]) -> ApiError | None:
        if not headers.get("anthropic-version"):
            return _invalid("anthropic-version: header is required")
        return None

    def check_auth(self, headers: Mapping[str, str], api_key: str) -> ApiError | None:
        key = headers.get("x-api-key", "")
        if not key:
            return ApiError(401, "x-api-key header is required")
        if key != api_key:
            return ApiError(401, "invalid x-api-key")
        return None

    def validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise _invalid("There was an error parsing the body of your request.")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _invalid("model: Field required")
        limit = body.get("max_tokens")
        if limit is None:
            raise _invalid("max_tokens: Field required")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise _invalid("max_tokens: Input should be greater than or equal to 1")
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise _invalid("messages: Field required")
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role == "system":
                raise _invalid(
                    'messages: Unexpected role "system". The Messages API accepts a top-level '
                    '`system` parameter, not "system" as an input message role.'
                )
            if role not in ("user", "assistant"):
                raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            if i and messages[i - 1].get("role") == role:
                raise _invalid('messages: roles must alternate between "user" and "assistant"')
            if not isinstance(message.get("content"), str | list):
                raise _invalid(f"messages.{i}.content: Field required")
            if isinstance(message["content"], list):
                for j, block in enumerate(message["content"]):
                    _validate_block(f"messages.{i}.content.{j}", role, block)
        _validate_thinking(body)
        marks = _cache_marks(body)
        if marks > MAX_CACHE_MARKS:
            raise _invalid(
                f"A maximum of {MAX_CACHE_MARKS} blocks with cache_control may be provided. "
                f"Found {marks}."
            )
        temperature = body.get("temperature")
        if isinstance(temperature, int | float) and not 0 <= temperature <= 1:
            raise _invalid("temperature: range: 0..1")
        stop = body.get("stop_sequences")
        if stop is not None and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)
        ):
            raise _invalid("stop_sequences: Input should be a valid list")
        tools = body.get("tools")
        if tools is not None and not (
            isinstance(tools, list)
            and all(
                isinstance(t, dict)
                and isinstance(t.get("name"), str)
                and isinstance(t.get("input_schema"), dict)
                for t in tools
            )
        ):
            raise _invalid("tools: each tool needs a name and an input_schema")
        if "tool_choice" in body and not tools:
            raise _invalid("tool_choice may only be specified while providing tools")

    def model_of(self, body: Any) -> str | None:
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else None

    def wants_stream(self, body: Any) -> bool:
        return isinstance(body, dict) and body.get("stream") is True

    def plan(self, body: Any) -> ReplyPlan:
        plan = plan_reply(to_planner(body))
        read, write = self._cache(body, plan.prompt_tokens)
        return dataclasses.replace(plan, cached_tokens=read, cache_write_tokens=write)

    def _cache(self, body: dict[str, Any], prompt_tokens: int) -> tuple[int, int]:
        """(tokens read, tokens written) for the request's marked prefixes."""
        prefixes = _marked_prefixes(body)
        if not prefixes:
            return 0, 0
        read = 0
        for blocks in reversed(prefixes):  # the longest prefix seen before is read
            if self.cache.seen("anthropic", body["model"], blocks):
                read = _prefix_tokens(blocks)
                break
        for blocks in prefixes:
            self.cache.seen("anthropic", body["model"], blocks)
        read = min(read, prompt_tokens)
        write = min(max(_prefix_tokens(prefixes[-1]) - read, 0), prompt_tokens - read)
        return read, write

    # -- answers ----------------------------------------------------------------------------

    def _message(self, body: Any, plan: ReplyPlan) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "input_tokens": plan.prompt_tokens - plan.cached_tokens - plan.cache_write_tokens,
            "output_tokens": 0,
        }
        if _cache_marks(body):  # the cache counts, when the request asked for caching
            usage["cache_creation_input_tokens"] = plan.cache_write_tokens
            usage["cache_read_input_tokens"] = plan.cached_tokens
        return {
            "id": f"msg_{_ID_PREFIX}{next(_ids):012x}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }

    def unary_body(self, body: Any, plan: ReplyPlan) -> bytes:
        message = self._message(body, plan)
        message["content"] += _thinking_blocks(plan)
        if plan.text:
            message["content"].append({"type": "text", "text": plan.text})
        for call in plan.tool_calls:
            message["content"].append(
                {
                    "type": "tool_use",
                    "id": tool_use_id(call.id),
                    "name": call.name,
                    "input": orjson.loads(call.arguments),
                }
            )
        message["stop_reason"] = stop_reason(plan)
        message["stop_sequence"] = plan.stop_sequence
        message["usage"]["output_tokens"] = plan.completion_tokens
        return orjson.dumps(message)

    def stream_events(self, body: Any, plan: ReplyPlan) -> list[StreamEvent]:
        """message_start, a ping, one content block (text word by word, or each tool call with
        its input in pieces), message_delta with the stop reason and usage, message_stop."""
        message = self._message(body, plan)
        message["usage"]["output_tokens"] = 1  # as the API reports it at the start
        events = [
            StreamEvent(_sse("message_start", {"type": "message_start", "message": message})),
            StreamEvent(b'event: ping\ndata: {"type": "ping"}\n\n'),
        ]
        first = 0  # the content block index of the answer, after any thinking blocks
        for block in _thinking_blocks(plan):
            if block["type"] == "redacted_thinking":  # whole, on its start event
                events.append(StreamEvent(_block_start(first, block)))
            else:
                events.append(
                    StreamEvent(_block_start(first, {"type": "thinking", "thinking": ""}))
                )
                events += [
                    StreamEvent(_delta(first, {"type": "thinking_delta", "thinking": piece}), True)
                    for piece in plan.reasoning_pieces()
                ]
                signature = {"type": "signature_delta", "signature": block["signature"]}
                events.append(StreamEvent(_delta(first, signature)))
            events.append(StreamEvent(_block_stop(first)))
            first += 1
        if plan.tool_calls:
            for offset, call in enumerate(plan.tool_calls):
                index = first + offset
                block = {"type": "tool_use", "id": tool_use_id(call.id), "name": call.name}
                events.append(StreamEvent(_block_start(index, {**block, "input": {}})))
                events += [
                    StreamEvent(
                        _delta(index, {"type": "input_json_delta", "partial_json": piece}), True
                    )
                    for piece in pieces(call.arguments, ARGUMENT_PIECE_CHARS)
                ]
                events.append(StreamEvent(_block_stop(index)))
        else:
            events.append(StreamEvent(_block_start(first, {"type": "text", "text": ""})))
            events += [
                StreamEvent(_delta(first, {"type": "text_delta", "text": piece}), True)
                for piece in plan.pieces()
            ]
            events.append(StreamEvent(_block_stop(first)))
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(plan), "stop_sequence": plan.stop_sequence},
            "usage": {"output_tokens": plan.completion_tokens},
        }
        events.append(StreamEvent(_sse("message_delta", delta)))
        events.append(StreamEvent(_sse("message_stop", {"type": "message_stop"})))
        return events

    # -- errors -----------------------------------------------------------------------------

    def error_body(self, error: ApiError) -> bytes:
        kind = ERROR_TYPES.get(error.status)
        if kind is None:
            kind = "api_error" if error.status >= 500 else "invalid_request_error"
        return orjson.dumps(
            {
                "type": "error",
                "error": {"type": kind, "message": error.message},
                "request_id": f"req_{_ID_PREFIX}{next(_ids):012x}",
            }
        )

    def model_not_found(self, model: str) -> ApiError:
        return ApiError(404, f"model: {model}")

    def fault_error(self, status: int, message: str | None) -> ApiError:
        return ApiError(
            status, message or _FAULT_MESSAGES.get(status, f"Simulated error {status}.")
        )

    def malformed_body(self) -> bytes:
        return b'{"id": "msg_malformed", "type": "message", "content": [{'

    def malformed_event(self) -> bytes:
        return (
            b"event: content_block_delta\n"
            b'data: {"type": "content_block_delta", "index": 0, "delta": {"text": "\n\n'
        )


def _thinking_blocks(plan: ReplyPlan) -> list[dict[str, Any]]:
    """The answer's reasoning as Anthropic's blocks: redacted first (when asked), then signed."""
    if plan.reasoning is None:
        return []
    blocks: list[dict[str, Any]] = []
    if plan.redacted:
        blocks.append({"type": "redacted_thinking", "data": redact(plan.reasoning)})
    signed = {"type": "thinking", "thinking": plan.reasoning, "signature": sign(plan.reasoning)}
    return [*blocks, signed]


def _validate_block(path: str, role: str, block: Any) -> None:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind not in _BLOCK_TYPES:
        raise _invalid(f"{path}.type: Input tag {kind!r} found using 'type' does not match")
    if kind in ("image", "document"):
        source = block.get("source")
        source_type = source.get("type") if isinstance(source, dict) else None
        allowed = ("base64", "url") + (("text", "content", "file") if kind == "document" else ())
        if source_type not in allowed:
            raise _invalid(f"{path}.source: Input tag {source_type!r} does not match")
        assert isinstance(source, dict)
        if source_type == "base64":
            media = source.get("media_type")
            wanted = _IMAGE_TYPES if kind == "image" else ("application/pdf",)
            if media not in wanted or not isinstance(source.get("data"), str):
                raise _invalid(f"{path}.source.base64.media_type: Input should be {wanted}")
        if source_type == "url" and not str(source.get("url", "")).startswith("http"):
            raise _invalid(f"{path}.source.url: must be an http(s) URL")
        if source_type == "text" and (
            source.get("media_type") != "text/plain" or not isinstance(source.get("data"), str)
        ):
            raise _invalid(f"{path}.source.text: media_type 'text/plain' and data required")
    if kind == "thinking":
        if role != "assistant":
            raise _invalid(f"{path}: thinking blocks are only allowed in assistant messages")
        if not signature_ok(block.get("thinking"), block.get("signature")):
            raise _invalid(f"{path}: Invalid `signature` in `thinking` block")
    if kind == "redacted_thinking" and not redacted_ok(block.get("data")):
        raise _invalid(f"{path}: Invalid `data` in `redacted_thinking` block")


def _validate_thinking(body: dict[str, Any]) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in ("enabled", "disabled", "adaptive"):
        raise _invalid("thinking.type: Input tag does not match 'enabled', 'disabled'")
    if kind != "enabled":
        return
    assert isinstance(thinking, dict)
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < MIN_THINKING_BUDGET:
        raise _invalid(
            f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
            f"{MIN_THINKING_BUDGET}"
        )
    if budget >= body["max_tokens"]:
        raise _invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    if thinking.get("display") not in (None, "summarized", "omitted"):
        raise _invalid("thinking.enabled.display: Input should be 'summarized' or 'omitted'")
    if body.get("temperature") not in (None, 1):
        raise _invalid("`temperature` may only be set to 1 when thinking is enabled.")
    messages = body["messages"]
    last = messages[-2] if len(messages) > 1 and messages[-1].get("role") == "user" else None
    content = last.get("content") if isinstance(last, dict) else None
    if isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_use" for b in content
    ):
        head = content[0].get("type") if isinstance(content[0], dict) else None
        if head not in ("thinking", "redacted_thinking"):
            raise _invalid(
                f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or "
                f"`redacted_thinking`, but found `{head}`. When `thinking` is enabled, a final "
                f"`assistant` message must start with a thinking block."
            )


def _blocks_in_order(body: dict[str, Any]) -> list[Any]:
    """Tools, then system, then messages' blocks: the order a cached prefix runs in."""
    blocks: list[Any] = list(body.get("tools") or ())
    system = body.get("system")
    blocks += system if isinstance(system, list) else [system] if system else []
    for message in body["messages"]:
        content = message["content"]
        blocks += content if isinstance(content, list) else [content]
    return blocks


def _cache_marks(body: dict[str, Any]) -> int:
    return sum(isinstance(b, dict) and "cache_control" in b for b in _blocks_in_order(body))


def _marked_prefixes(body: dict[str, Any]) -> list[list[Any]]:
    """The prompt up to and including each marked block, shortest first."""
    blocks = _blocks_in_order(body)
    return [
        blocks[: i + 1]
        for i, block in enumerate(blocks)
        if isinstance(block, dict) and "cache_control" in block
    ]


def _prefix_tokens(blocks: list[Any]) -> int:
    """The simulator's token count of a prefix: words of its text, tools as JSON."""
    total = 0
    for block in blocks:
        if isinstance(block, str):
            total += count_words(block)
        elif isinstance(block, dict) and "input_schema" in block:
            total += count_words(json.dumps(block))
        elif isinstance(block, dict):
            total += count_words(message_text([block]))
    return total


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    payload = {"type": "content_block_start", "index": index, "content_block": block}
    return _sse("content_block_start", payload)


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return _sse(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


def _block_stop(index: int) -> bytes:
    return _sse("content_block_stop", {"type": "content_block_stop", "index": index})


def tool_use_id(planned: str) -> str:
    return "toolu_" + planned.removeprefix("call_")


def stop_reason(plan: ReplyPlan) -> str:
    if plan.finish_reason in _STOP_REASONS:
        return _STOP_REASONS[plan.finish_reason]
    return "stop_sequence" if plan.stop_sequence is not None else "end_turn"


# -- the planner's view of a Messages request ------------------------------------------------


def to_planner(body: dict[str, Any]) -> dict[str, Any]:
    """The same conversation in OpenAI's chat-completions shape, for `plan_reply`."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system)})
    for message in body["messages"]:
        messages += _split(message["role"], message["content"])
    request: dict[str, Any] = {"messages": messages, "max_tokens": body.get("max_tokens")}
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        request["reasoning"] = effort_of_budget(thinking["budget_tokens"])
    if body.get("stop_sequences"):
        request["stop"] = body["stop_sequences"]
    if body.get("tools"):
        request["tools"] = [_function_tool(tool) for tool in body["tools"]]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        if choice.get("type") == "none":
            request["tool_choice"] = "none"
        elif choice.get("type") == "tool":
            request["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    return request


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )


def _split(role: str, content: Any) -> list[dict[str, Any]]:
    """One Messages turn as the OpenAI messages it stands for (tool results are their own)."""
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    out: list[dict[str, Any]] = []
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    media: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") in ("image", "document"):
            media.append(_as_openai_part(block))
        elif block.get("type") == "tool_result":
            out.append({"role": "tool", "content": _text(block.get("content") or "")})
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        elif block.get("type") == "text":
            text.append(str(block.get("text", "")))
    if text or calls or media:
        said = " ".join(text)
        parts = [{"type": "text", "text": said}] if said else []
        message: dict[str, Any] = {"role": role, "content": parts + media if media else said}
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


def _as_openai_part(block: dict[str, Any]) -> dict[str, Any]:
    """An image or document block as the planner's (OpenAI's) part, for its description."""
    source = block["source"]
    if source["type"] == "base64":
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif source["type"] == "text":
        url = "data:text/plain;base64," + base64.b64encode(source["data"].encode()).decode()
    else:
        url = source.get("url") or ""
    if block["type"] == "image":
        return {"type": "image_url", "image_url": {"url": url}}
    file: dict[str, Any] = {"file_data": url}
    if block.get("title"):
        file["filename"] = block["title"]
    return {"type": "file", "file": file}


def _function_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool["name"]}
    if "description" in tool:
        function["description"] = tool["description"]
    function["parameters"] = tool["input_schema"]
    return {"type": "function", "function": function}
