"""Validation of a ChatCompletionRequest before any upstream call.

Every refusal is an `InvalidRequest` naming the field in the proto's own JSON
path (`messages[2].role`), which the client receives as a google.rpc.BadRequest
field violation. Fields are checked in the proto's order; the first problem found
is reported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from ai_service.config import ModelSettings, RequestLimits
from ai_service.errors import InvalidRequest, quoted
from ai_service.policy.parts import check_cache_control, check_parts, check_reasoning_blocks
from ai_service.providers.content import EFFORTS, MIN_BUDGET_TOKENS, media_size
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    EmbedRequest,
    Message,
    ReasoningConfig,
    ResponseFormat,
    Tool,
    ToolChoice,
)

#: Checks one field the caller set: (the request, the field's value, the limits).
Rule = Callable[[ChatCompletionRequest, Any, RequestLimits], None]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
#: Deepest nesting of the JSON a request carries (tool parameters, arguments, schemas).
MAX_JSON_NESTING = 64
#: Longest model name a request may carry: far above any real one, and it is echoed in
#: errors, metrics and the audit log.
MAX_MODEL_CHARS = 256
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_request(request: ChatCompletionRequest, limits: RequestLimits) -> None:
    """Shape and range checks that need no knowledge of the model.

    Only the fields the caller set are looked at, each by its own rule (`_RULES`): a
    typical request sets two or three, and this runs on every call.
    """
    size = request.ByteSize()
    if size > limits.max_request_bytes:
        # Images, documents and audio have their own limit (max_media_bytes).
        size -= sum(media_size(part) for message in request.messages for part in message.parts)
    _check_size_and_model(size, request.model, limits)
    if not request.messages:
        raise InvalidRequest("messages", "must hold at least one message")
    for field, value in request.ListFields():
        rule = _RULES.get(field.name)
        if rule is not None:
            rule(request, value, limits)


def _check_size_and_model(size: int, model: str, limits: RequestLimits) -> None:
    """What every call must pass first: its size (`size`: what counts of it) and a model."""
    if size > limits.max_request_bytes:
        raise InvalidRequest(
            "request", f"is {size} bytes; the limit is {limits.max_request_bytes} bytes"
        )
    if not model:
        raise InvalidRequest("model", "is required")
    if len(model) > MAX_MODEL_CHARS:
        raise InvalidRequest("model", f"is {len(model)} characters; the limit is {MAX_MODEL_CHARS}")


EMBED_ENCODINGS = frozenset({"", "float", "base64"})


def validate_embed(request: EmbedRequest, limits: RequestLimits) -> None:
    """Shape and range checks of an Embed call; every empty input is named at once."""
    _check_size_and_model(request.ByteSize(), request.model, limits)
    if not request.inputs:
        raise InvalidRequest("inputs", "must hold at least one text")
    if len(request.inputs) > limits.max_embed_inputs:
        raise InvalidRequest(
            "inputs", f"has {len(request.inputs)} texts; at most {limits.max_embed_inputs}"
        )
    empty = [(f"inputs[{i}]", "is empty") for i, text in enumerate(request.inputs) if not text]
    if empty:
        (field, description), *more = empty
        raise InvalidRequest(field, description, more=more)
    if request.HasField("dimensions") and request.dimensions < 1:
        raise InvalidRequest("dimensions", f"is {request.dimensions}; must be at least 1")
    if request.encoding_format not in EMBED_ENCODINGS:
        raise InvalidRequest(
            "encoding_format", f"is {quoted(request.encoding_format)}; expected float or base64"
        )
    if len(request.metadata) > limits.max_metadata_entries:
        raise InvalidRequest(
            "metadata",
            f"has {len(request.metadata)} entries; at most {limits.max_metadata_entries} "
            f"are allowed",
        )


def validate_for_model(request: ChatCompletionRequest, model: ModelSettings) -> None:
    """Checks against the resolved model's own limits."""
    cap = model.max_output_tokens
    if cap is not None and request.HasField("max_tokens") and request.max_tokens > cap:
        # Named as the caller named it: a content rule may have routed the call to a
        # model the caller's key may not name, whose name must not leak.
        raise InvalidRequest(
            "max_tokens", f"is {request.max_tokens}; {quoted(request.model)} allows {cap}"
        )


def apply_caller_cap(
    request: ChatCompletionRequest, caller: str, cap: int | None, model: ModelSettings
) -> None:
    """A key's output cap: refuse a larger max_tokens, and impose it where none was asked
    (no more than the model's own cap, which `validate_for_model` has already applied)."""
    if cap is None:
        return
    if not request.HasField("max_tokens"):
        model_cap = model.max_output_tokens
        request.max_tokens = cap if model_cap is None else min(cap, model_cap)
    elif request.max_tokens > cap:
        raise InvalidRequest(
            "max_tokens", f"is {request.max_tokens}; key {caller!r} may ask for at most {cap}"
        )


def _check_messages(
    request: ChatCompletionRequest, messages: Sequence[Message], limits: RequestLimits
) -> None:
    if len(messages) > limits.max_messages:
        raise InvalidRequest(
            "messages", f"has {len(messages)} messages; at most {limits.max_messages}"
        )
    parts = media = 0
    for i, message in enumerate(messages):
        _check_message(i, message)
        if message.parts:
            parts, media = check_parts(i, message, limits, parts, media)


def _check_message(i: int, message: Message) -> None:
    role, calls = message.role, message.tool_calls
    if role not in ROLES:
        shown = quoted(role) if role else "empty"
        raise InvalidRequest(f"messages[{i}].role", f"is {shown}; expected one of {_listed(ROLES)}")
    if role == "tool":
        if not message.tool_call_id:
            raise InvalidRequest(f"messages[{i}].tool_call_id", "is required for role 'tool'")
    elif message.tool_call_id:
        raise InvalidRequest(f"messages[{i}].tool_call_id", "is only allowed for role 'tool'")
    if message.reasoning:
        check_reasoning_blocks(i, message)
    if message.HasField("cache_control"):
        check_cache_control(f"messages[{i}].cache_control", message.cache_control)
        if not message.content:  # nothing to put the mark after: it would be lost
            raise InvalidRequest(
                f"messages[{i}].cache_control",
                "marks the message's content, which is empty; mark one of its parts instead",
            )
    if not calls:
        if not message.content and not message.parts and role != "tool":
            # A tool may legitimately return nothing; anyone else must say something.
            raise InvalidRequest(f"messages[{i}].content", "is empty")
        return
    if role != "assistant":
        raise InvalidRequest(f"messages[{i}].tool_calls", "are only allowed for role 'assistant'")
    for j, call in enumerate(calls):
        call_path = f"messages[{i}].tool_calls[{j}]"
        if not call.id:
            raise InvalidRequest(f"{call_path}.id", "is required")
        if not _FUNCTION_NAME.fullmatch(call.function.name):
            raise InvalidRequest(f"{call_path}.function.name", _FUNCTION_NAME_RULE)
        _check_json_object(f"{call_path}.function.arguments", call.function.arguments or "{}")


def _check_max_tokens(request: ChatCompletionRequest, value: int, limits: RequestLimits) -> None:
    if value < 1:
        raise InvalidRequest("max_tokens", f"is {value}; must be at least 1")


def _within(field: str, low: float, high: float) -> Rule:
    def check(request: ChatCompletionRequest, value: float, limits: RequestLimits) -> None:
        if not (math.isfinite(value) and low <= value <= high):
            raise InvalidRequest(field, f"is {value}; must be between {low:g} and {high:g}")

    return check


def _check_stop(request: ChatCompletionRequest, stop: Sequence[str], limits: RequestLimits) -> None:
    if len(stop) > limits.max_stop_sequences:
        raise InvalidRequest(
            "stop", f"has {len(stop)} sequences; at most {limits.max_stop_sequences}"
        )
    for i, sequence in enumerate(stop):
        if not sequence:
            raise InvalidRequest(f"stop[{i}]", "is empty")


def _check_response_format(
    request: ChatCompletionRequest, fmt: ResponseFormat, limits: RequestLimits
) -> None:
    if fmt.type not in RESPONSE_FORMATS:
        raise InvalidRequest(
            "response_format.type",
            f"is {quoted(fmt.type)}; expected one of {_listed(RESPONSE_FORMATS)}",
        )
    if fmt.type == "json_schema":
        _check_json_object("response_format.json_schema", fmt.json_schema)


def _check_metadata(
    request: ChatCompletionRequest, metadata: Mapping[str, str], limits: RequestLimits
) -> None:
    if len(metadata) > limits.max_metadata_entries:
        raise InvalidRequest(
            "metadata",
            f"has {len(metadata)} entries; at most {limits.max_metadata_entries} are allowed",
        )


def _check_tools(
    request: ChatCompletionRequest, tools: Sequence[Tool], limits: RequestLimits
) -> None:
    if len(tools) > limits.max_tools:
        raise InvalidRequest("tools", f"has {len(tools)} tools; at most {limits.max_tools}")
    names = set()
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        if tool.type not in ("", "function"):
            raise InvalidRequest(
                f"{path}.type", f"is {quoted(tool.type)}; only 'function' is supported"
            )
        function = tool.function
        if not _FUNCTION_NAME.fullmatch(function.name):
            raise InvalidRequest(f"{path}.function.name", _FUNCTION_NAME_RULE)
        if function.name in names:
            raise InvalidRequest(f"{path}.function.name", f"{function.name!r} is declared twice")
        names.add(function.name)
        if function.WhichOneof("parameters") == "parameters_json":
            _check_json_object(f"{path}.function.parameters_json", function.parameters_json)
        if tool.HasField("cache_control"):
            check_cache_control(f"{path}.cache_control", tool.cache_control)


def _check_tool_choice(
    request: ChatCompletionRequest, choice: ToolChoice, limits: RequestLimits
) -> None:
    names = {tool.function.name for tool in request.tools}
    which = choice.WhichOneof("choice")
    if which == "mode" and choice.mode not in TOOL_CHOICE_MODES:
        raise InvalidRequest(
            "tool_choice.mode",
            f"is {quoted(choice.mode)}; expected one of {_listed(TOOL_CHOICE_MODES)}",
        )
    if which == "function" and choice.function not in names:
        raise InvalidRequest(
            "tool_choice.function", f"{quoted(choice.function)} is not among tools"
        )
    if which == "mode" and choice.mode == "required" and not names:
        raise InvalidRequest("tool_choice.mode", "is 'required' but no tools are given")


def _check_reasoning(
    request: ChatCompletionRequest, setting: ReasoningConfig, limits: RequestLimits
) -> None:
    which = setting.WhichOneof("setting")
    if which == "effort" and setting.effort not in EFFORTS:
        raise InvalidRequest(
            "reasoning.effort", f"is {quoted(setting.effort)}; expected one of {_listed(EFFORTS)}"
        )
    if which == "budget_tokens" and setting.budget_tokens < MIN_BUDGET_TOKENS:
        raise InvalidRequest(
            "reasoning.budget_tokens",
            f"is {setting.budget_tokens}; must be at least {MIN_BUDGET_TOKENS}",
        )
    if which == "off" and not setting.off:
        raise InvalidRequest(
            "reasoning.off", "is false; to reason, set effort or budget_tokens instead"
        )


def _check_json_object(path: str, text: str) -> None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(path, f"is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InvalidRequest(path, "must be a JSON object")
    if _nesting(value) > MAX_JSON_NESTING:
        # The adapters re-encode it for the upstream, and orjson writes no deeper than
        # ~250 levels: refused here, by name, instead of failing there as INTERNAL.
        raise InvalidRequest(path, f"is nested deeper than {MAX_JSON_NESTING} levels")


def _nesting(value: object) -> int:
    """How deep objects and arrays nest in a parsed JSON value (a scalar is 0)."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        )
        if children is None:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest


_FUNCTION_NAME_RULE = "must be 1-64 letters, digits, underscores or dashes"


def _listed(names: frozenset[str]) -> str:
    return ", ".join(sorted(names))


#: The rule for each request field that has one, by the field's name in the proto.
_RULES: dict[str, Rule] = {
    "messages": _check_messages,
    "tools": _check_tools,
    "tool_choice": _check_tool_choice,
    "max_tokens": _check_max_tokens,
    "temperature": _within("temperature", 0.0, 2.0),
    "top_p": _within("top_p", 0.0, 1.0),
    "stop": _check_stop,
    "metadata": _check_metadata,
    "presence_penalty": _within("presence_penalty", -2.0, 2.0),
    "frequency_penalty": _within("frequency_penalty", -2.0, 2.0),
    "response_format": _check_response_format,
    "reasoning": _check_reasoning,
}
