"""Keyword arguments to a `ChatCompletionRequest`: the one conversion both clients use.

`chat.completions.create(...)`, `ask(...)` and `build_chat_request(...)` all build their
request here, so a value is read the same way everywhere. Each argument is named after
its `ChatCompletionRequest` field and may be the proto value itself or plain data; a
dict may take OpenAI's chat-completions JSON shape
(`{"type": "function", "function": {"name": ..., "parameters": {...}}}`) or the proto's
own field names (the JSON grpcurl takes). `None` leaves a field unset, so the server
default applies. A name that is no field raises `TypeError` naming it: nothing is
silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias, TypedDict

from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage

from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    Message,
    ReasoningConfig,
    RequestOptions,
    ResponseFormat,
    Tool,
    ToolChoice,
)

__all__ = ["ChatParams", "MessageParam", "chat_request"]

JSONObject: TypeAlias = Mapping[str, Any]
#: A message of the conversation: the proto, or a dict such as `{"role": "user", "content": "hi"}`.
MessageParam: TypeAlias = Message | JSONObject


class ChatParams(TypedDict, total=False):
    """The optional request fields, as keyword arguments (see protos/ai_service.proto)."""

    tools: Iterable[Tool | JSONObject] | None
    #: "auto", "none", "required", `{"type": "function", "function": {"name": ...}}`.
    tool_choice: str | ToolChoice | JSONObject | None
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    #: One stop sequence or several.
    stop: str | Sequence[str] | None
    seed: int | None
    user: str | None
    #: The request's `metadata` field (labels recorded with the call, never sent
    #: upstream), renamed because a call's `metadata=` is its gRPC metadata.
    request_metadata: Mapping[str, str] | None
    presence_penalty: float | None
    frequency_penalty: float | None
    #: `{"type": "json_object"}`, or `{"type": "json_schema", "json_schema": {"name": ...,
    #: "schema": {...}, "strict": True}}`.
    response_format: ResponseFormat | JSONObject | None
    #: Gateway options for this call: `{"bypass_cache": True, "cache_ttl_seconds": 60}`.
    options: RequestOptions | JSONObject | None
    #: `{"effort": "high"}`, `{"budget_tokens": 4096, "include_text": True}`, `{"off": True}`.
    reasoning: ReasoningConfig | JSONObject | None


_FIELDS = ChatCompletionRequest.DESCRIPTOR.fields_by_name
#: Argument names that differ from their field's name.
_ALIASES = {"request_metadata": "metadata"}


def chat_request(
    model: str, messages: Iterable[MessageParam], **params: Any
) -> ChatCompletionRequest:
    """The request for `model`, `messages` and the optional fields in `params`."""
    request = ChatCompletionRequest()
    _set(request, "model", "model", model)
    _set(request, "messages", "messages", messages)
    given: dict[str, str] = {}
    for name, value in params.items():
        field = _ALIASES.get(name, name)
        if field not in _FIELDS or field in ("model", "messages"):
            raise TypeError(f"unknown chat completion parameter {name!r}")
        if field in given:
            raise TypeError(f"{name!r} and {given[field]!r} set the same field; give one")
        given[field] = name
        if value is not None:
            _set(request, field, name, value)
    return request


def _set(request: ChatCompletionRequest, field: str, name: str, value: Any) -> None:
    """Set `field` of `request` from the argument `name`'s `value`."""
    descriptor = _FIELDS[field]
    target = getattr(request, field)
    if descriptor.message_type is not None and not descriptor.message_type.GetOptions().map_entry:
        shape = _SHAPES.get(field)
        if descriptor.is_repeated:
            for index, item in enumerate(_items(value, name)):
                _merge(target.add(), item, f"{name}[{index}]", shape)
        else:
            _merge(target, value, name, shape)
        return
    if descriptor.is_repeated and descriptor.message_type is None:
        value = [value] if isinstance(value, str) else _items(value, name)
    try:
        if descriptor.message_type is not None:  # a map
            target.update(value)
        elif descriptor.is_repeated:
            target.extend(value)
        else:
            setattr(request, field, value)
    except (TypeError, ValueError) as error:  # protobuf's own, which do not name the field
        raise TypeError(f"{name}: {error}") from None


def _items(value: Any, name: str) -> list[Any]:
    # A lone dict or string where a list belongs is a mistake, not a list of its keys.
    if isinstance(value, str | bytes | Mapping | ProtoMessage) or not isinstance(value, Iterable):
        raise TypeError(f"{name}: expected a list, not {type(value).__name__}")
    return list(value)


def _merge(
    target: ProtoMessage,
    value: Any,
    where: str,
    shape: Callable[[Any], Any] | None,
) -> None:
    """Fill `target` from a message of its type or a dict (after OpenAI's `shape`)."""
    if shape is not None:
        value = shape(value)
    if isinstance(value, Mapping):
        try:
            json_format.ParseDict(dict(value), target)
        except json_format.ParseError as error:
            raise TypeError(f"{where}: {' '.join(str(error).split())}") from None
    elif isinstance(value, ProtoMessage) and value.DESCRIPTOR is target.DESCRIPTOR:
        target.CopyFrom(value)
    else:
        expected = target.DESCRIPTOR.name
        raise TypeError(f"{where}: expected {expected} or a dict, not {type(value).__name__}")


# --- OpenAI's shapes, rewritten to the proto's before parsing ------------------------------
# Each returns what it does not recognise unchanged, for the parser to take or refuse.


def _json_text(value: Any) -> Any:
    """A JSON value as the text the proto carries (text stays as given)."""
    return value if isinstance(value, str) else json.dumps(value)


def _message_shape(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    message = dict(value)
    if message.get("content", "") is None:  # an assistant message that only calls tools
        del message["content"]
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        message["tool_calls"] = [_tool_call_shape(call) for call in calls]
    return message


def _tool_call_shape(value: Any) -> Any:
    function = value.get("function") if isinstance(value, Mapping) else None
    if not isinstance(function, Mapping) or "arguments" not in function:
        return value
    return {**value, "function": {**function, "arguments": _json_text(function["arguments"])}}


def _tool_shape(value: Any) -> Any:
    function = value.get("function") if isinstance(value, Mapping) else None
    if not isinstance(function, Mapping) or "parameters" not in function:
        return value
    rest = {key: item for key, item in function.items() if key != "parameters"}
    return {**value, "function": {**rest, "parameters_json": _json_text(function["parameters"])}}


def _tool_choice_shape(value: Any) -> Any:
    if isinstance(value, str):
        return {"mode": value}
    if isinstance(value, Mapping) and value.get("type") == "function":
        function = value.get("function")
        if isinstance(function, Mapping) and set(value) == {"type", "function"}:
            return {"function": function.get("name")}
    return value


#: OpenAI's `json_schema` object's keys, and the ResponseFormat fields they become.
_JSON_SCHEMA_KEYS = {"name": "schema_name", "schema": "json_schema", "strict": "strict"}


def _response_format_shape(value: Any) -> Any:
    schema = value.get("json_schema") if isinstance(value, Mapping) else None
    if not isinstance(schema, Mapping):  # the proto's shape: json_schema is text
        return value
    unknown = sorted(set(schema) - set(_JSON_SCHEMA_KEYS))
    if unknown:
        raise TypeError(
            f"response_format.json_schema: the gateway does not carry {', '.join(unknown)}"
        )
    shaped = {key: item for key, item in value.items() if key != "json_schema"}
    for key, field in _JSON_SCHEMA_KEYS.items():
        if key in schema:
            shaped[field] = _json_text(schema[key]) if key == "schema" else schema[key]
    return shaped


_SHAPES: dict[str, Callable[[Any], Any]] = {
    "messages": _message_shape,
    "tools": _tool_shape,
    "tool_choice": _tool_choice_shape,
    "response_format": _response_format_shape,
}
