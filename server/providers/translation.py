"""Translation pieces every adapter shares: proto parts as JSON, shape failures, chunk coalescing.

Each adapter module keeps only what is particular to its provider; what would
otherwise be copied between them (reading a tool's JSON schema, a tool call's
arguments as an object, turning a body of the wrong shape into
`UpstreamUnavailable`, folding text deltas that arrived together into one chunk,
building the final chunk) lives here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format

from protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    FunctionDefinition,
    ToolCall,
    Usage,
)
from server.errors import UpstreamUnavailable

_T = TypeVar("_T")

#: The JSON schema of a function that declares no parameters: an object with none.
EMPTY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


def function_parameters(function: FunctionDefinition) -> dict[str, Any] | None:
    """The JSON schema of a function's arguments, however the caller gave it; None if absent."""
    which = function.WhichOneof("parameters")
    if which == "parameters_json":
        schema: dict[str, Any] = orjson.loads(function.parameters_json)
        return schema
    if which == "parameters_struct":
        return json_format.MessageToDict(function.parameters_struct)
    return None


def arguments_object(call: ToolCall) -> Any:
    """A tool call's arguments as the JSON value they spell (validation made them an object)."""
    return orjson.loads(call.function.arguments or "{}")


def arguments_text(arguments: Any) -> str:
    """Arguments a provider sent as a JSON value, as the service's compact JSON text."""
    return orjson.dumps(arguments if arguments is not None else {}).decode()


def tool_choice_of(request: ChatCompletionRequest) -> tuple[str, str] | None:
    """("mode", "auto"|"none"|"required") or ("function", name); None when unset."""
    if not request.HasField("tool_choice"):
        return None
    which = request.tool_choice.WhichOneof("choice")
    if which is None:
        return None
    return which, getattr(request.tool_choice, which)


def translate_failure(translate: Callable[[dict[str, Any]], _T], payload: dict[str, Any]) -> _T:
    """Run a translation; a payload of the wrong shape is the upstream's fault."""
    try:
        return translate(payload)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise UpstreamUnavailable(
            f"upstream sent an unexpected body ({type(exc).__name__}: {exc})"
        ) from None


def set_usage(usage: Usage, prompt_tokens: int, completion_tokens: int) -> None:
    usage.prompt_tokens = prompt_tokens
    usage.completion_tokens = completion_tokens
    usage.total_tokens = prompt_tokens + completion_tokens


def text_chunk(template: ChatCompletionChunk, text: str, role: str = "") -> ChatCompletionChunk:
    """A chunk like `template` (id, model, created) adding `text` to choice 0."""
    chunk = ChatCompletionChunk(id=template.id, model=template.model, created=template.created)
    choice = chunk.choices.add(index=0)
    choice.delta.role = role
    choice.delta.content = text
    return chunk


def finish_chunk(
    template: ChatCompletionChunk, finish_reason: str, prompt_tokens: int, completion_tokens: int
) -> ChatCompletionChunk:
    """The last chunk of a stream: an empty delta with the finish reason, and the usage."""
    chunk = text_chunk(template, "")
    chunk.choices[0].finish_reason = finish_reason
    set_usage(chunk.usage, prompt_tokens, completion_tokens)
    return chunk


def append_text(into: ChatCompletionChunk, chunk: ChatCompletionChunk) -> bool:
    """Fold `chunk` into `into` when both only add text, or arguments of the same tool call,
    to the same choice."""
    if len(into.choices) != 1 or len(chunk.choices) != 1 or chunk.HasField("usage"):
        return False
    target, source = into.choices[0], chunk.choices[0]
    if (
        target.index != source.index
        or target.finish_reason
        or source.finish_reason
        or source.delta.role
    ):
        return False
    if not target.delta.tool_calls and not source.delta.tool_calls:
        target.delta.content += source.delta.content
        return True
    return _append_arguments(target.delta, source.delta)


def _append_arguments(target: Any, source: Any) -> bool:
    """Fold a continuation of one tool call's arguments into the piece before it."""
    if (
        target.content
        or source.content
        or len(target.tool_calls) != 1
        or len(source.tool_calls) != 1
    ):
        return False
    before, after = target.tool_calls[0], source.tool_calls[0]
    if before.index != after.index or after.id or after.function.name:
        return False
    before.function.arguments += after.function.arguments
    return True


def coalesce(chunks: Iterable[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    """Chunks that arrived in one network read, with consecutive text deltas folded together:
    each gRPC message costs far more than the bytes it carries, and nothing waits for more."""
    out: list[ChatCompletionChunk] = []
    for chunk in chunks:
        if not (out and append_text(out[-1], chunk)):
            out.append(chunk)
    return out
