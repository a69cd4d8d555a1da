"""Translation pieces every adapter shares: proto parts as JSON, shape failures, chunk coalescing.

Each adapter module keeps only what is particular to its provider; what would
otherwise be copied between them (reading a tool's JSON schema, a tool call's
arguments as an object, turning a body of the wrong shape into
`UpstreamUnavailable`, folding text deltas that arrived together into one chunk,
building the final chunk) lives here once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format

from ai_service.errors import UpstreamUnavailable
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    FunctionDefinition,
    ToolCall,
    Usage,
)

_T = TypeVar("_T")

#: Roles whose messages instruct the model: "developer" is OpenAI's name for "system"
#: with its reasoning models; APIs with one system prompt join them into it.
SYSTEM_ROLES = frozenset({"system", "developer"})

#: Anthropic's stop reasons (the Messages API's `stop_reason`) as the service's finish
#: reasons; the HTTP door's Anthropic API turns them back by the first of each.
ANTHROPIC_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: The status each documented Anthropic error type comes with (errors inside a stream,
#: after the 200, carry no status of their own; the HTTP door names its own by status).
ANTHROPIC_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

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
    """("mode", "auto"|"none"|"required") or ("function", name); None when unset.

    Also None without tools: OpenAI and Anthropic refuse a `tool_choice` without
    `tools` (HTTP 400), and without tools `auto` and `none` mean what no choice means
    (validation refuses `required` and a named function there).
    """
    if not request.tools or not request.HasField("tool_choice"):
        return None
    which = request.tool_choice.WhichOneof("choice")
    if which is None:
        return None
    return which, getattr(request.tool_choice, which)


def keeps_reasoning_text(request: ChatCompletionRequest) -> bool:
    """False when the caller asked not to get the reasoning text back (include_text false)."""
    setting = request.reasoning
    return not (request.HasField("reasoning") and setting.HasField("include_text")) or (
        setting.include_text
    )


def hide_reasoning_text(response: ChatCompletionResponse) -> None:
    """The answer without its reasoning text (the caller asked for none): a block keeps
    what the next turn needs (its signature, redacted data); a block of text alone goes."""
    for choice in response.choices:
        blocks = choice.message.reasoning
        for block in blocks:
            block.text = ""
        kept = [block for block in blocks if block.signature or block.redacted_data]
        if len(kept) != len(blocks):
            del blocks[:]
            blocks.extend(kept)


def translate_failure(translate: Callable[..., _T], payload: dict[str, Any], *args: object) -> _T:
    """Run a translation of `payload` (and `args`); a payload of the wrong shape is the
    upstream's fault."""
    try:
        return translate(payload, *args)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise UpstreamUnavailable(
            f"upstream sent an unexpected body ({type(exc).__name__}: {exc})"
        ) from None


def set_usage(usage: Usage, prompt_tokens: int, completion_tokens: int) -> None:
    usage.prompt_tokens = prompt_tokens
    usage.completion_tokens = completion_tokens
    usage.total_tokens = prompt_tokens + completion_tokens


def is_empty(chunk: ChatCompletionChunk) -> bool:
    """A chunk that adds nothing (what is left of one whose reasoning text was hidden)."""
    return not chunk.HasField("usage") and all(
        not (
            choice.finish_reason
            or choice.delta.role
            or choice.delta.content
            or choice.delta.tool_calls
            or choice.delta.reasoning
        )
        for choice in chunk.choices
    )


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


def text_length(chunk: ChatCompletionChunk) -> int:
    """Characters of text `chunk` adds, over all its choices."""
    length = 0
    for choice in chunk.choices:
        length += len(choice.delta.content)
    return length


def carries_output(chunk: ChatCompletionChunk) -> bool:
    """Whether `chunk` carries some of the answer: text, a tool call or reasoning (not
    merely a role, a finish reason or the usage)."""
    return any(
        choice.delta.content or choice.delta.tool_calls or choice.delta.reasoning
        for choice in chunk.choices
    )


def text_only(chunk: ChatCompletionChunk) -> tuple[int, str] | None:
    """(choice index, text) when `chunk` does nothing but add text to one choice."""
    if len(chunk.choices) != 1 or chunk.HasField("usage"):
        return None
    choice = chunk.choices[0]
    if (
        choice.finish_reason
        or choice.delta.role
        or choice.delta.tool_calls
        or choice.delta.reasoning
    ):
        return None
    return choice.index, choice.delta.content


def _text_target(chunk: ChatCompletionChunk) -> int | None:
    """The choice index whose text later text-only chunks may be folded into, if any."""
    if len(chunk.choices) != 1 or chunk.HasField("usage"):
        return None
    choice = chunk.choices[0]
    if choice.finish_reason or choice.delta.tool_calls or choice.delta.reasoning:
        return None  # text after reasoning starts a chunk of its own
    return choice.index


class TextRuns:
    """The chunks of one network read, consecutive text deltas folded together as they come.

    Each gRPC message costs far more than the bytes it carries, and nothing waits for
    more: what one read brought leaves as few messages as it can. Text is collected as
    strings and joined once, so an adapter that sees a plain text delta in the upstream's
    own JSON (`extend_text`) need not build a chunk for it at all.
    """

    __slots__ = ("_chunks", "_open", "_run")

    def __init__(self) -> None:
        self._chunks: list[ChatCompletionChunk] = []
        self._run: list[str] = []  # text still to be appended to the last chunk
        self._open: int | None = None  # the choice index the last chunk takes text for

    def extend_text(self, index: int, text: str) -> bool:
        """Fold `text` for choice `index` into the last chunk; False when it cannot take it."""
        if self._open != index:
            return False
        self._run.append(text)
        return True

    def add_text(self, chunk: ChatCompletionChunk, index: int) -> None:
        """`chunk`, known to do nothing but add text to choice `index` (`extend_text` has
        just refused that text), as the chunk later text may be folded into."""
        self._fold()
        self._chunks.append(chunk)
        self._open = index

    def add(self, chunk: ChatCompletionChunk) -> None:
        plain = text_only(chunk)
        if plain is not None and self.extend_text(*plain):
            return
        last = self.last()
        if last is not None and _append_arguments(last, chunk):
            return
        self._chunks.append(chunk)
        self._open = _text_target(chunk)

    def last(self) -> ChatCompletionChunk | None:
        self._fold()
        return self._chunks[-1] if self._chunks else None

    def take(self) -> list[ChatCompletionChunk]:
        """The folded chunks so far; the runs start empty again."""
        self._fold()
        chunks, self._chunks, self._open = self._chunks, [], None
        return chunks

    def _fold(self) -> None:
        if self._run:
            self._chunks[-1].choices[0].delta.content += "".join(self._run)
            self._run.clear()


def _append_arguments(into: ChatCompletionChunk, chunk: ChatCompletionChunk) -> bool:
    """Fold a continuation of one tool call's arguments into the piece before it."""
    if len(into.choices) != 1 or len(chunk.choices) != 1 or chunk.HasField("usage"):
        return False
    target, source = into.choices[0], chunk.choices[0]
    if (
        target.index != source.index
        or target.finish_reason
        or source.finish_reason
        or source.delta.role
        or target.delta.content
        or source.delta.content
        or source.delta.reasoning
        or len(target.delta.tool_calls) != 1
        or len(source.delta.tool_calls) != 1
    ):
        return False
    before, after = target.delta.tool_calls[0], source.delta.tool_calls[0]
    if before.index != after.index or after.id or after.function.name:
        return False
    before.function.arguments += after.function.arguments
    return True


def coalesce(chunks: Iterable[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    """Chunks that arrived in one network read, folded as `TextRuns` folds them."""
    runs = TextRuns()
    for chunk in chunks:
        runs.add(chunk)
    return runs.take()


def new_id(prefix: str) -> str:
    """An id the provider does not give (a response's, a tool call's): prefix + 24 hex digits."""
    return f"{prefix}{secrets.token_hex(12)}"
