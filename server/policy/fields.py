"""Every text of a request that an upstream receives, and of an answer a caller gets, to
be screened and rewritten.

Message contents are not all an upstream gets: text parts, the reasoning sent back,
names, tool definitions (their descriptions and JSON schemas), the arguments of earlier
tool calls, `stop`, `user` and a response's JSON schema go too, and redaction must see
each of them; never the bytes of images, documents or audio. Reasoning that carries a
provider's signature (Anthropic's thinking) is screened but never rewritten: the
signature covers its text byte for byte, and an edited block fails the next turn. A JSON
text is screened by its values, keys and numbers, not as raw text: `\\u0040` is an `@`
to the upstream, and a redacted value must leave valid JSON behind.

`metadata` and `options` never leave the gateway; roles, types and modes are checked
against fixed lists by validation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from google.protobuf import json_format

from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    EmbedRequest,
    Message,
)

#: `text`: free text; `name`: an identifier (a function's name, a call id), redacted in
#: a form identifiers allow; `json`: JSON text; `value`: an already parsed JSON value;
#: `signed`: text a signature covers, screened but never rewritten.
Shape = Literal["text", "name", "json", "value", "signed"]


@dataclass(frozen=True, slots=True)
class UpstreamText:
    shape: Shape
    get: Callable[[], Any]
    set: Callable[[Any], None]

    @property
    def editable(self) -> bool:
        return self.shape != "signed"


def _attribute(holder: Any, name: str, shape: Shape) -> UpstreamText:
    return UpstreamText(shape, lambda: getattr(holder, name), lambda v: setattr(holder, name, v))


def _message_texts(message: Message) -> Iterator[UpstreamText]:
    """A message's text: its content, its parts' text, file names and URLs (a URL may
    carry a token or an address), its reasoning."""
    if message.content:
        yield _attribute(message, "content", "text")
    for part in message.parts:
        kind = part.WhichOneof("kind")
        if kind == "text":
            yield _attribute(part, "text", "text")
        elif kind in ("image", "document"):
            media = getattr(part, kind)
            if media.WhichOneof("source") == "url":
                yield _attribute(media, "url", "name")
            if kind == "document" and media.name:
                yield _attribute(media, "name", "name")
    for block in message.reasoning:
        if block.text:
            yield _attribute(block, "text", "signed" if block.signature else "text")


def _struct(struct: Any) -> UpstreamText:
    def replace(value: Any) -> None:
        struct.Clear()
        struct.update(value)

    return UpstreamText("value", lambda: json_format.MessageToDict(struct), replace)


def _item(texts: Any, i: int) -> UpstreamText:
    def replace(value: str) -> None:
        texts[i] = value

    return UpstreamText("text", lambda: texts[i], replace)


def upstream_texts(request: ChatCompletionRequest | EmbedRequest) -> Iterator[UpstreamText]:
    """The request's texts that go upstream, each with a way to replace it; empty
    ones are left out."""
    if isinstance(request, EmbedRequest):
        yield from _embed_texts(request)
        return
    for message in request.messages:
        yield from _message_texts(message)
        if message.name:
            yield _attribute(message, "name", "name")
        if message.tool_call_id:
            yield _attribute(message, "tool_call_id", "name")
        for call in message.tool_calls:
            yield _attribute(call, "id", "name")
            yield _attribute(call.function, "name", "name")
            if call.function.arguments:
                yield _attribute(call.function, "arguments", "json")
    for tool in request.tools:
        function = tool.function
        yield _attribute(function, "name", "name")
        if function.description:
            yield _attribute(function, "description", "text")
        which = function.WhichOneof("parameters")
        if which == "parameters_json":
            yield _attribute(function, "parameters_json", "json")
        elif which == "parameters_struct":
            yield _struct(function.parameters_struct)
    if request.HasField("tool_choice") and request.tool_choice.WhichOneof("choice") == "function":
        yield _attribute(request.tool_choice, "function", "name")
    for i in range(len(request.stop)):
        yield _item(request.stop, i)
    if request.user:
        yield _attribute(request, "user", "text")
    if request.HasField("response_format"):
        response_format = request.response_format
        if response_format.schema_name:
            yield _attribute(response_format, "schema_name", "name")
        if response_format.json_schema:
            yield _attribute(response_format, "json_schema", "json")


def _embed_texts(request: EmbedRequest) -> Iterator[UpstreamText]:
    """An Embed call's texts: every input, and `user`."""
    for i in range(len(request.inputs)):
        yield _item(request.inputs, i)
    if request.user:
        yield _attribute(request, "user", "text")


def answer_texts(response: ChatCompletionResponse) -> Iterator[UpstreamText]:
    """The answer's texts a caller gets: each choice's content and reasoning."""
    for choice in response.choices:
        yield from _message_texts(choice.message)


def message_text(message: Message) -> str:
    """A message's text as one string: its content and text parts (for the audit log)."""
    texts = [message.content] if message.content else []
    texts += [part.text for part in message.parts if part.WhichOneof("kind") == "text"]
    return "\n".join(texts)


def parsed(field: UpstreamText) -> Any:
    """The JSON value a `json` or `value` field holds (validation made it parse)."""
    value = field.get()
    return orjson.loads(value) if field.shape == "json" else value


def store(field: UpstreamText, value: Any) -> None:
    field.set(orjson.dumps(value).decode() if field.shape == "json" else value)


def leaves(value: Any) -> list[str]:
    """The texts inside a JSON value, in a fixed order: keys, strings, and numbers as
    written (a card number may be a JSON number)."""
    found: list[str] = []
    _walk(value, found, None)
    return found


def rebuilt(value: Any, texts: list[str]) -> Any:
    """`value` with its leaves replaced, in `leaves` order, by `texts`: a number whose
    text changed becomes a string."""
    return _walk(value, None, iter(texts))


def _walk(value: Any, found: list[str] | None, texts: Iterator[str] | None) -> Any:
    def leaf(text: str, original: Any) -> Any:
        if found is not None:
            found.append(text)
            return original
        assert texts is not None
        new = next(texts)
        return original if new == text else new

    if isinstance(value, dict):
        return {leaf(key, key): _walk(item, found, texts) for key, item in value.items()}
    if isinstance(value, list):
        return [_walk(item, found, texts) for item in value]
    if isinstance(value, str):
        return leaf(value, value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return leaf(_number_text(value), value)
    return value


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e20:
        return str(int(value))  # a Struct keeps numbers as doubles: 4111111111111111.0
    return str(value)
