"""Content filtering on demand: a conversation asks to be filtered, in every cloud format.

A last user message starting `/filter prompt` is refused as the API refuses a prompt its
filter stops (Azure's 400 `content_filter`, Gemini's `promptFeedback.blockReason`,
Bedrock's guardrail); one starting `/filter answer` gets an answer the filter stopped
(Azure's and OpenAI's `finish_reason: content_filter`, Gemini's `finishReason: SAFETY`,
Bedrock's `stopReason: content_filtered`), with no text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .planner import ReplyPlan, message_text

Filtered = Literal["prompt", "answer"]


def filter_asked(request: Mapping[str, Any]) -> Filtered | None:
    """What the planner-shaped `request`'s last user message asks to have filtered."""
    messages: Sequence[Any] = request.get("messages") or ()
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") != "user":
        return None
    text = message_text(last.get("content")).lstrip()
    if text.startswith("/filter prompt"):
        return "prompt"
    if text.startswith("/filter answer"):
        return "answer"
    return None


def filtered_answer(plan: ReplyPlan) -> ReplyPlan:
    """`plan` as the filter leaves it: no text, finish_reason content_filter."""
    return dataclasses.replace(
        plan, text="", tool_calls=(), finish_reason="content_filter", completion_tokens=0
    )
