"""Content pieces every adapter shares: media types, data URLs, reasoning levels, cache marks.

What a provider's API calls these things differs (OpenAI's `image_url` and
`reasoning_effort`, Anthropic's `source` blocks and `budget_tokens`, Ollama's raw
base64 `images` and `think` levels); the gateway's own vocabulary for them, and the
conversions between an effort and a token budget, live here once.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from ai_service_protos.ai_service_pb2 import (
    CacheControl,
    ChatCompletionRequest,
    ContentPart,
    Message,
    ReasoningConfig,
)

IMAGE_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
DOCUMENT_MEDIA_TYPES = frozenset({"application/pdf", "text/plain"})
AUDIO_FORMATS = frozenset({"wav", "mp3"})
IMAGE_DETAILS = frozenset({"", "auto", "low", "high"})
EFFORTS = frozenset({"low", "medium", "high"})
CACHE_TTLS = frozenset({"", "5m", "1h"})

#: An effort as an Anthropic thinking budget (its minimum is 1024).
EFFORT_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}
#: The least budget a reasoning setting may ask for (Anthropic's minimum).
MIN_BUDGET_TOKENS = 1024
#: A budget as an effort: the first level whose ceiling it does not pass.
_BUDGET_CEILINGS = (("low", 2048), ("medium", 8192))

#: Image types recognised by their first bytes, for Ollama's images (which carry none).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{b64(data)}"


def image_type_of(data: bytes) -> str | None:
    """The media type of image bytes, from their signature; None if not one of the four."""
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def is_off(reasoning: ReasoningConfig) -> bool:
    return reasoning.WhichOneof("setting") == "off" and reasoning.off


def reasoning_of(request: ChatCompletionRequest) -> ReasoningConfig | None:
    """The request's reasoning setting, when it sets one."""
    if not request.HasField("reasoning"):
        return None
    setting = request.reasoning
    if setting.WhichOneof("setting") is None and not setting.HasField("include_text"):
        return None
    return setting


def reasoning_on(request: ChatCompletionRequest) -> bool:
    """Whether the request asks the model to reason (an effort or a budget)."""
    setting = reasoning_of(request)
    return setting is not None and setting.WhichOneof("setting") in ("effort", "budget_tokens")


def effort_of(setting: ReasoningConfig) -> str | None:
    """The setting as an effort level (a budget mapped to the nearest); None if neither."""
    which = setting.WhichOneof("setting")
    if which == "effort":
        return setting.effort
    if which == "budget_tokens":
        for effort, ceiling in _BUDGET_CEILINGS:
            if setting.budget_tokens <= ceiling:
                return effort
        return "high"
    return None


def budget_of(setting: ReasoningConfig) -> int | None:
    """The setting as a token budget (an effort mapped by EFFORT_BUDGETS); None if neither."""
    which = setting.WhichOneof("setting")
    if which == "budget_tokens":
        return setting.budget_tokens
    if which == "effort":
        return EFFORT_BUDGETS[setting.effort]
    return None


def cache_control_json(mark: CacheControl) -> dict[str, Any]:
    """A cache mark in the shape Anthropic (and every API that copied it) takes."""
    out: dict[str, Any] = {"type": mark.type or "ephemeral"}
    if mark.ttl:
        out["ttl"] = mark.ttl
    return out


def cache_marks(request: ChatCompletionRequest) -> Iterator[str]:
    """The field path of every cache-control mark of the request, in order."""
    for i, tool in enumerate(request.tools):
        if tool.HasField("cache_control"):
            yield f"tools[{i}].cache_control"
    for i, message in enumerate(request.messages):
        if message.HasField("cache_control"):
            yield f"messages[{i}].cache_control"
        for j, part in enumerate(message.parts):
            if part.HasField("cache_control"):
                yield f"messages[{i}].parts[{j}].cache_control"


def part_kind(part: ContentPart) -> str:
    """ "text", "image", "document" or "audio" ("" for a part with nothing set)."""
    return part.WhichOneof("kind") or ""


def media_parts(message: Message) -> Iterator[tuple[int, ContentPart]]:
    """(index, part) of the message's images, documents and audio."""
    for j, part in enumerate(message.parts):
        if part.WhichOneof("kind") in ("image", "document", "audio"):
            yield j, part


def media_size(part: ContentPart) -> int:
    """Bytes of a part given inline (0 for text and for a URL)."""
    kind = part.WhichOneof("kind")
    if kind == "image":
        return len(part.image.data)
    if kind == "document":
        return len(part.document.data)
    if kind == "audio":
        return len(part.audio.data)
    return 0


def part_summaries(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    """What the audit log keeps of the request's media: where, what kind, how big."""
    summaries: list[dict[str, Any]] = []
    for i, message in enumerate(request.messages):
        for j, part in media_parts(message):
            kind = part.WhichOneof("kind")
            source = getattr(part, kind or "")
            summary: dict[str, Any] = {"message": i, "part": j, "kind": kind}
            if kind == "audio":
                summary["format"] = part.audio.format
            elif source.media_type:
                summary["media_type"] = source.media_type
            if kind != "audio" and source.WhichOneof("source") == "url":
                summary["source"] = "url"
            else:
                summary["bytes"] = media_size(part)
            summaries.append(summary)
    return summaries
