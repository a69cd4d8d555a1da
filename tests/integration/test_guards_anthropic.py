"""Every system message of a call reaches Anthropic, in the top-level `system` field.

The simulator records the body it received: the assertions read what the upstream got.
"""

from __future__ import annotations

from typing import Any

from ai_service.config import parse_config
from ai_service.simulator import Simulator
from ai_service_client import AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import PROVIDER_KEY_REF, TEST_ENV, TEST_KEY, StartGateway, config_tree


def system_text(system: Any) -> str:
    """The text of a Messages API `system`: a string, or a list of text blocks."""
    if isinstance(system, str):
        return system
    return "\n\n".join(block["text"] for block in system)


async def test_every_system_message_reaches_the_anthropic_system_field(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    """Guards: `messages_to_anthropic` keeping only one system message (the first or
    the last, e.g. `system = [message.content]` instead of appending), which dropped
    the others' instructions without a word."""
    tree = config_tree(simulator.base_url)
    tree["providers"].append(
        {"name": "claude", "kind": "anthropic", "base_url": simulator.base_url,
         "api_key": PROVIDER_KEY_REF}
    )  # fmt: skip
    tree["models"].append({"name": "sim-claude", "provider": "claude", "upstream_model": "c-1"})
    gateway = await start_gateway(parse_config(tree, env=TEST_ENV))
    request = ChatCompletionRequest(
        model="sim-claude",
        messages=[
            Message(role="system", content="You are terse."),
            Message(role="system", content="Answer in French."),
            Message(role="user", content="hello"),
            Message(role="assistant", content="bonjour"),
            Message(role="system", content="Never use emoji."),  # one later on, too
            Message(role="user", content="and again"),
        ],
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        await client.chat(request)
    (received,) = simulator.stats.received
    assert received.path == "/v1/messages"
    text = system_text(received.body["system"])
    positions = [text.find(s) for s in ("You are terse.", "Answer in French.", "Never use emoji.")]
    assert -1 not in positions, text
    assert positions == sorted(positions), text  # in the order they were given
    # Only user and assistant turns remain, alternating.
    assert [m["role"] for m in received.body["messages"]] == ["user", "assistant", "user"]
