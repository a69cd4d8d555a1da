"""Redaction reads every text field (content, text parts, reasoning text) and never the bytes
of images, documents or audio; signed reasoning is scanned but left as it was signed."""

from __future__ import annotations

import pytest

from ai_service.config import RedactionMode, RedactionSettings
from ai_service.policy.redaction import RedactionPolicy, Screening, SensitiveDataBlocked
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ContentPart,
    ImagePart,
    Message,
    ReasoningBlock,
)

EMAIL = "jane.doe@example.com"
IMAGE = f"\x89PNG mail {EMAIL}".encode()


def screening(mode: RedactionMode, *, answers: bool = False) -> Screening:
    policy = RedactionPolicy(RedactionSettings(mode=mode, answers=answers), keep_text=False)
    return policy.screening("k", "m", None)


def request() -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model="m",
        messages=[
            Message(
                role="user",
                content="hi",
                parts=[
                    ContentPart(text=f"write to {EMAIL}"),
                    ContentPart(image=ImagePart(data=IMAGE, media_type="image/png")),
                ],
            ),
            Message(
                role="assistant",
                content="ok",
                reasoning=[
                    ReasoningBlock(text=f"they use {EMAIL}"),
                    ReasoningBlock(text=f"signed {EMAIL}", signature="sig"),
                ],
            ),
            Message(role="user", content="go on"),
        ],
    )


def test_text_parts_and_unsigned_reasoning_are_redacted_bytes_and_signed_text_are_not() -> None:
    sent = request()
    screening("redact").prompt(sent)
    user, assistant = sent.messages[0], sent.messages[1]
    assert user.parts[0].text == "write to [REDACTED:EMAIL]"
    assert user.parts[1].image.data == IMAGE
    assert assistant.reasoning[0].text == "they use [REDACTED:EMAIL]"
    assert assistant.reasoning[1].text == f"signed {EMAIL}"  # its signature covers it


def test_block_mode_finds_a_text_part() -> None:
    with pytest.raises(SensitiveDataBlocked):
        screening("block").prompt(request())


def test_an_email_only_in_image_bytes_is_not_found() -> None:
    only_bytes = ChatCompletionRequest(
        messages=[
            Message(
                role="user",
                parts=[ContentPart(image=ImagePart(data=IMAGE, media_type="image/png"))],
            )
        ]
    )
    screening("block").prompt(only_bytes)


def test_answer_reasoning_is_redacted_unless_signed() -> None:
    response = ChatCompletionResponse()
    message = response.choices.add().message
    message.content = f"mail {EMAIL}"
    message.reasoning.add(text=f"found {EMAIL}")
    message.reasoning.add(text=f"signed {EMAIL}", signature="sig")
    screening("redact", answers=True).answer(response)
    assert message.content == "mail [REDACTED:EMAIL]"
    assert message.reasoning[0].text == "found [REDACTED:EMAIL]"
    assert message.reasoning[1].text == f"signed {EMAIL}"
