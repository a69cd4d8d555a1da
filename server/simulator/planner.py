"""Deterministic answers: what the simulated model replies to an OpenAI-shaped chat request.

Pure functions, no I/O: tests call `plan_reply` to know exactly what the server will
send. The rules are listed in the package docstring (`server/simulator/__init__.py`).
Formats other than OpenAI translate their request into this shape before planning.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import orjson

from .content import MEDIA_PART_TOKENS, REASONING_WORDS, describe_media, media_of

PER_MESSAGE_TOKENS: Final = 3
MAX_GENERATED_WORDS: Final = 100_000

_TOKENS_COMMAND: Final = re.compile(r"/tokens\s+(\d+)")
_WORD_WITH_SPACE: Final = re.compile(r"\S+\s*")
_PUNCTUATION: Final = ".,;:!?\"'()[]{}"
_MASK64: Final = (1 << 64) - 1

# 64 plain words: the generated text reads as words, and a word never contains a stop-like
# character.
_VOCABULARY: Final = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray",
    "yankee", "zulu", "amber", "basil", "cedar", "dune", "ember", "fern",
    "garnet", "harbor", "iris", "jasper", "kelp", "lumen", "maple", "nectar",
    "onyx", "pebble", "quartz", "river", "saffron", "timber", "umber", "velvet",
    "willow", "yarrow", "zephyr", "anchor", "beacon", "canyon", "drift", "estuary",
    "fjord", "glacier", "horizon", "island", "jungle", "karst", "lagoon", "meadow",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One planned function call; `arguments` is compact JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """The complete answer to one request, before any wire format is applied."""

    text: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    #: The stop sequence that cut the text, if one did (Anthropic reports which).
    stop_sequence: str | None = None
    #: The reasoning before the answer, when the request turned reasoning on; its words
    #: are `reasoning_tokens`, part of `completion_tokens`.
    reasoning: str | None = None
    reasoning_tokens: int = 0
    #: The reasoning also comes as one redacted block (the last user text had `/redacted`).
    redacted: bool = False
    #: Of prompt_tokens: read from, and written to, the prompt cache (set by the format).
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def pieces(self) -> list[str]:
        """The text cut into stream deltas: each word with the whitespace that follows it."""
        return _WORD_WITH_SPACE.findall(self.text) if self.text else []

    def reasoning_pieces(self) -> list[str]:
        """The reasoning cut into stream deltas, as `pieces` cuts the text."""
        return _WORD_WITH_SPACE.findall(self.reasoning) if self.reasoning else []


def count_words(text: str) -> int:
    """The simulator's token: one whitespace-separated word."""
    return len(text.split())


def message_text(content: Any) -> str:
    """The text of a message `content`: a string, or the `text` parts of a part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def count_prompt_tokens(messages: Sequence[Any], tools: Sequence[Any]) -> int:
    """Σ over messages (3 + words(content) + words(each tool call's arguments))
    + Σ over tools words(json.dumps(tool)) (Python's default `", "` and `": "` separators)."""
    total = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        total += PER_MESSAGE_TOKENS + count_words(message_text(content))
        total += MEDIA_PART_TOKENS * len(media_of(content))
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                total += count_words(function["arguments"])
    for tool in tools:
        total += count_words(json.dumps(tool))
    return total


def plan_reply(request: Mapping[str, Any]) -> ReplyPlan:
    """Plan the answer to a (validated) OpenAI chat-completions request body.

    `reasoning` (the planner's own key, which formats set from their reasoning setting)
    is a level of REASONING_WORDS, or absent for none."""
    messages: Sequence[Any] = request.get("messages") or ()
    tools: Sequence[Any] = request.get("tools") or ()
    prompt_tokens = count_prompt_tokens(messages, tools)
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    last_role = last.get("role")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    user_text = message_text(users[-1].get("content")) if users else ""
    reasoning = _reasoning(request.get("reasoning"), user_text)
    thought = count_words(reasoning) if reasoning else 0
    redacted = reasoning is not None and "/redacted" in user_text

    if tools and last_role == "user" and request.get("tool_choice") != "none":
        call = plan_tool_call(tools, request.get("tool_choice"), message_text(last.get("content")))
        completion_tokens = count_words(call.name) + count_words(call.arguments) + thought
        return ReplyPlan(
            None,
            (call,),
            "tool_calls",
            prompt_tokens,
            completion_tokens,
            reasoning=reasoning,
            reasoning_tokens=thought,
            redacted=redacted,
        )

    text = _answer_text(messages, last)
    text, stop_sequence = _apply_stop(text, request.get("stop"))
    finish_reason = "stop"
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    words = count_words(text)
    if isinstance(limit, int) and words + thought > limit:  # reasoning counts toward it
        allowed = max(limit - thought, 0)
        text = "".join(_WORD_WITH_SPACE.findall(text)[:allowed]).rstrip()
        words, finish_reason, stop_sequence = allowed, "length", None
    return ReplyPlan(
        text,
        (),
        finish_reason,
        prompt_tokens,
        words + thought,
        stop_sequence,
        reasoning=reasoning,
        reasoning_tokens=thought,
        redacted=redacted,
    )


def _reasoning(level: Any, user_text: str) -> str | None:
    words = REASONING_WORDS.get(level) if isinstance(level, str) else None
    if words is None:
        return None
    return "Reasoning: " + generated_words(f"reasoning\0{user_text}", words)


def _answer_text(messages: Sequence[Any], last: Mapping[str, Any]) -> str:
    content = message_text(last.get("content"))
    if last.get("role") == "tool":
        return f"Tool result received: {content}"
    if last.get("role") == "user":
        command = _TOKENS_COMMAND.match(content)
        if command:
            return generated_words(content, min(int(command.group(1)), MAX_GENERATED_WORDS))
        media = describe_media(last.get("content"))
        if media is not None:
            return f"You said: {content} {media}" if content else media
        return f"You said: {content}"
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return f"You said: {message_text(users[-1].get('content')) if users else ''}"


@lru_cache(maxsize=256)
def generated_words(seed_text: str, count: int) -> str:
    """`count` words from the fixed vocabulary, chosen by a 64-bit LCG (Knuth's MMIX constants)
    seeded with the first 8 bytes of BLAKE2b(seed_text): stable across runs and processes."""
    state = int.from_bytes(hashlib.blake2b(seed_text.encode(), digest_size=8).digest(), "big")
    size = len(_VOCABULARY)
    words = []
    for _ in range(count):
        state = (state * 6364136223846793005 + 1442695040888963407) & _MASK64
        words.append(_VOCABULARY[(state >> 33) % size])
    return " ".join(words)


def _apply_stop(text: str, stop: Any) -> tuple[str, str | None]:
    """The text cut before the earliest stop sequence, and that sequence (None if none)."""
    sequences = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    found = [(i, s) for s in sequences if isinstance(s, str) and s and (i := text.find(s)) >= 0]
    if not found:
        return text, None
    cut, sequence = min(found, key=lambda hit: hit[0])
    return text[:cut], sequence


def plan_tool_call(tools: Sequence[Any], tool_choice: Any, user_text: str) -> ToolCall:
    """Call the function named by `tool_choice`, else the first tool, with arguments built
    from its JSON-schema `properties`."""
    function = _chosen_function(tools, tool_choice)
    name = str(function.get("name", ""))
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    user_words = user_text.split()
    arguments = {
        prop: _argument_value(prop, schema, user_words)
        for prop, schema in (properties.items() if isinstance(properties, dict) else ())
    }
    arguments_json = orjson.dumps(arguments).decode()
    digest = hashlib.blake2b(f"{name}\0{arguments_json}\0{user_text}".encode(), digest_size=12)
    return ToolCall(id=f"call_{digest.hexdigest()}", name=name, arguments=arguments_json)


def _chosen_function(tools: Sequence[Any], tool_choice: Any) -> Mapping[str, Any]:
    functions = [t["function"] for t in tools if isinstance(t, dict) and "function" in t]
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        for function in functions:
            if function.get("name") == wanted:
                return function  # type: ignore[no-any-return]
    return functions[0] if functions else {}


def _argument_value(prop: str, schema: Any, user_words: Sequence[str]) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(kind, list):  # ["string", "null"]: the first non-null type decides
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return word_after(prop, user_words) or "value"
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    return None


def word_after(prop: str, words: Sequence[str]) -> str | None:
    """The value the user gave for `prop`: `prop Paris`, `prop: Paris` or `prop=Paris`."""
    key = prop.lower()
    for i, word in enumerate(words):
        head, eq, tail = word.partition("=")
        if eq and head.lower() == key and tail.strip(_PUNCTUATION):
            return tail.strip(_PUNCTUATION)
        if word.rstrip(":").lower() == key and i + 1 < len(words):
            value = words[i + 1].strip(_PUNCTUATION)
            if value:
                return value
    return None
