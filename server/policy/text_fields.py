"""Every text field of a request the upstream receives, and of an answer the caller gets.

Redaction scans these, never the bytes of images, documents or audio. A request's
text is each message's `content`, its text parts and the reasoning text it sends back;
an answer's is each choice's `content` and its reasoning text. Reasoning that carries
a provider's signature (Anthropic's thinking) is scanned but not `editable`: the
signature covers the text byte for byte, and an edited block fails the next turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ContentPart,
    Message,
    ReasoningBlock,
)


@dataclass(frozen=True, slots=True)
class TextField:
    """One text field: where it is, and whether it may be changed."""

    holder: Message | ContentPart | ReasoningBlock
    name: str
    editable: bool = True

    @property
    def text(self) -> str:
        value: str = getattr(self.holder, self.name)
        return value

    def set(self, text: str) -> None:
        setattr(self.holder, self.name, text)


def _message_fields(message: Message) -> Iterator[TextField]:
    if message.content:
        yield TextField(message, "content")
    for part in message.parts:
        if part.WhichOneof("kind") == "text":
            yield TextField(part, "text")
    for block in message.reasoning:
        if block.text:
            yield TextField(block, "text", editable=not block.signature)


def text_fields(request: ChatCompletionRequest) -> Iterator[TextField]:
    """The request's text fields, in order."""
    for message in request.messages:
        yield from _message_fields(message)


def answer_fields(response: ChatCompletionResponse) -> Iterator[TextField]:
    """The answer's text fields, in order."""
    for choice in response.choices:
        yield from _message_fields(choice.message)


def message_text(message: Message) -> str:
    """A message's text as one string: its content and text parts (for the audit log)."""
    texts = [message.content] if message.content else []
    texts += [part.text for part in message.parts if part.WhichOneof("kind") == "text"]
    return "\n".join(texts)
