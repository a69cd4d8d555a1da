"""Redaction applies to every message of the prompt, the first (system) one included.

The simulator records the body the upstream received, so each test reads what left
the gateway rather than trusting the gateway's own account of it.
"""

from __future__ import annotations

import grpc
import pytest

from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import TEST_KEY, StartGateway

EMAIL = "alice@example.com"
CARD = "4111 1111 1111 1111"


def with_pii_in_system() -> ChatCompletionRequest:
    """A system message holding PII first, then a user message with PII of another kind."""
    return ChatCompletionRequest(
        model="sim-gpt",
        messages=[
            Message(role="system", content=f"escalate to {EMAIL} when unsure"),
            Message(role="user", content=f"my card is {CARD}"),
        ],
    )


async def test_redact_mode_redacts_the_first_system_message_before_the_upstream_sees_it(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    """Guards: the prompt scan skipping the first message (`request.messages[1:]` in
    `Screening.prompt`), which sent a system prompt's PII upstream untouched."""
    gateway = await start_gateway(redaction={"mode": "redact"})
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        await client.chat(with_pii_in_system())
    (received,) = simulator.stats.received
    assert [m["content"] for m in received.body["messages"]] == [
        "escalate to [REDACTED:EMAIL] when unsure",
        "my card is [REDACTED:CREDIT_CARD]",
    ]


async def test_block_mode_refuses_pii_found_only_in_the_first_system_message(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    """Guards: the prompt scan skipping the first message, which let a system prompt's
    PII through a `block` policy (the user message here is clean)."""
    gateway = await start_gateway(redaction={"mode": "block"})
    request = ChatCompletionRequest(
        model="sim-gpt",
        messages=[
            Message(role="system", content=f"escalate to {EMAIL} when unsure"),
            Message(role="user", content="hello"),
        ],
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(request)
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == "SENSITIVE_DATA"
    assert caught.value.error_metadata["kinds"] == "EMAIL"
    assert simulator.stats.total_requests == 0
