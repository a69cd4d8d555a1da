"""Validation of a ChatCompletionRequest before any upstream call.

Every refusal is an `InvalidRequest` naming the field in the proto's own JSON
path (`messages[2].role`), which the client receives as a google.rpc.BadRequest
field violation. Checks run cheapest first; the first problem found is reported.
"""

from __future__ import annotations

import math
import re

import orjson

from protos.ai_service_pb2 import ChatCompletionRequest, Message
from server.config import ModelSettings, RequestLimits
from server.errors import InvalidRequest

ROLES = frozenset({"system", "user", "assistant", "tool"})
TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_request(request: ChatCompletionRequest, limits: RequestLimits) -> None:
    """Shape and range checks that need no knowledge of the model."""
    size = request.ByteSize()
    if size > limits.max_request_bytes:
        raise InvalidRequest(
            "request", f"is {size} bytes; the limit is {limits.max_request_bytes} bytes"
        )
    if not request.model:
        raise InvalidRequest("model", "is required")
    _check_messages(request, limits)
    _check_sampling(request, limits)
    _check_tools(request, limits)
    if len(request.metadata) > limits.max_metadata_entries:
        raise InvalidRequest(
            "metadata",
            f"has {len(request.metadata)} entries; at most "
            f"{limits.max_metadata_entries} are allowed",
        )


def validate_for_model(request: ChatCompletionRequest, model: ModelSettings) -> None:
    """Checks against the resolved model's own limits."""
    cap = model.max_output_tokens
    if cap is not None and request.HasField("max_tokens") and request.max_tokens > cap:
        raise InvalidRequest("max_tokens", f"is {request.max_tokens}; {model.name} allows {cap}")


def apply_caller_cap(request: ChatCompletionRequest, caller: str, cap: int | None) -> None:
    """A key's output cap: refuse a larger max_tokens, and impose it where none was asked."""
    if cap is None:
        return
    if not request.HasField("max_tokens"):
        request.max_tokens = cap
    elif request.max_tokens > cap:
        raise InvalidRequest(
            "max_tokens", f"is {request.max_tokens}; key {caller!r} may ask for at most {cap}"
        )


def _check_messages(request: ChatCompletionRequest, limits: RequestLimits) -> None:
    if not request.messages:
        raise InvalidRequest("messages", "must hold at least one message")
    if len(request.messages) > limits.max_messages:
        raise InvalidRequest(
            "messages", f"has {len(request.messages)} messages; at most {limits.max_messages}"
        )
    for i, message in enumerate(request.messages):
        _check_message(f"messages[{i}]", message)


def _check_message(path: str, message: Message) -> None:
    if message.role not in ROLES:
        shown = repr(message.role) if message.role else "empty"
        raise InvalidRequest(f"{path}.role", f"is {shown}; expected one of {_listed(ROLES)}")
    if message.role == "tool":
        if not message.tool_call_id:
            raise InvalidRequest(f"{path}.tool_call_id", "is required for role 'tool'")
    elif message.tool_call_id:
        raise InvalidRequest(f"{path}.tool_call_id", "is only allowed for role 'tool'")
    if message.tool_calls and message.role != "assistant":
        raise InvalidRequest(f"{path}.tool_calls", "are only allowed for role 'assistant'")
    if not message.content and not message.tool_calls and message.role != "tool":
        # A tool may legitimately return nothing; anyone else must say something.
        raise InvalidRequest(f"{path}.content", "is empty")
    for j, call in enumerate(message.tool_calls):
        call_path = f"{path}.tool_calls[{j}]"
        if not call.id:
            raise InvalidRequest(f"{call_path}.id", "is required")
        if not _FUNCTION_NAME.fullmatch(call.function.name):
            raise InvalidRequest(f"{call_path}.function.name", _FUNCTION_NAME_RULE)
        _check_json_object(f"{call_path}.function.arguments", call.function.arguments or "{}")


def _check_sampling(request: ChatCompletionRequest, limits: RequestLimits) -> None:
    if request.HasField("max_tokens") and request.max_tokens < 1:
        raise InvalidRequest("max_tokens", f"is {request.max_tokens}; must be at least 1")
    _check_range(request, "temperature", 0.0, 2.0)
    _check_range(request, "top_p", 0.0, 1.0)
    _check_range(request, "presence_penalty", -2.0, 2.0)
    _check_range(request, "frequency_penalty", -2.0, 2.0)
    if len(request.stop) > limits.max_stop_sequences:
        raise InvalidRequest(
            "stop", f"has {len(request.stop)} sequences; at most {limits.max_stop_sequences}"
        )
    for i, stop in enumerate(request.stop):
        if not stop:
            raise InvalidRequest(f"stop[{i}]", "is empty")
    if request.HasField("response_format"):
        fmt = request.response_format
        if fmt.type not in RESPONSE_FORMATS:
            raise InvalidRequest(
                "response_format.type",
                f"is {fmt.type!r}; expected one of {_listed(RESPONSE_FORMATS)}",
            )
        if fmt.type == "json_schema":
            _check_json_object("response_format.json_schema", fmt.json_schema)


def _check_range(request: ChatCompletionRequest, field: str, low: float, high: float) -> None:
    if not request.HasField(field):
        return
    value = getattr(request, field)
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidRequest(field, f"is {value}; must be between {low:g} and {high:g}")


def _check_tools(request: ChatCompletionRequest, limits: RequestLimits) -> None:
    if len(request.tools) > limits.max_tools:
        raise InvalidRequest("tools", f"has {len(request.tools)} tools; at most {limits.max_tools}")
    names = set()
    for i, tool in enumerate(request.tools):
        path = f"tools[{i}]"
        if tool.type not in ("", "function"):
            raise InvalidRequest(f"{path}.type", f"is {tool.type!r}; only 'function' is supported")
        function = tool.function
        if not _FUNCTION_NAME.fullmatch(function.name):
            raise InvalidRequest(f"{path}.function.name", _FUNCTION_NAME_RULE)
        if function.name in names:
            raise InvalidRequest(f"{path}.function.name", f"{function.name!r} is declared twice")
        names.add(function.name)
        if function.WhichOneof("parameters") == "parameters_json":
            _check_json_object(f"{path}.function.parameters_json", function.parameters_json)
    if not request.HasField("tool_choice"):
        return
    choice = request.tool_choice
    which = choice.WhichOneof("choice")
    if which == "mode" and choice.mode not in TOOL_CHOICE_MODES:
        raise InvalidRequest(
            "tool_choice.mode", f"is {choice.mode!r}; expected one of {_listed(TOOL_CHOICE_MODES)}"
        )
    if which == "function" and choice.function not in names:
        raise InvalidRequest("tool_choice.function", f"{choice.function!r} is not among tools")
    if which == "mode" and choice.mode == "required" and not names:
        raise InvalidRequest("tool_choice.mode", "is 'required' but no tools are given")


def _check_json_object(path: str, text: str) -> None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(path, f"is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InvalidRequest(path, "must be a JSON object")


_FUNCTION_NAME_RULE = "must be 1-64 letters, digits, underscores or dashes"


def _listed(names: frozenset[str]) -> str:
    return ", ".join(sorted(names))
