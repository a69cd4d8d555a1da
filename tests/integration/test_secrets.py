"""No caller key or provider key ever shows up in a log line or an error."""

from __future__ import annotations

import base64
import logging
import urllib.parse
from pathlib import Path

import pytest

from ai_service.config import parse_config
from ai_service.errors import UpstreamUnavailable, keep_secret, to_rpc_status
from ai_service.observability.logging import JsonFormatter
from ai_service.providers.status_mapping import MAX_MESSAGE_CHARS
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from tests.conftest import (
    PROVIDER_SECRET,
    TEST_ENV,
    TEST_KEY,
    StartGateway,
    config_tree,
)

HELLO = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hello")])


async def test_keys_never_reach_logs_or_errors(
    gateway: Gateway, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[str] = []
    with caplog.at_level(logging.DEBUG):
        async with AsyncAIClient(gateway.address, TEST_KEY) as client:
            await client.chat(HELLO)
            [c async for c in client.stream_chat(HELLO)]
            # The upstream refuses the gateway's provider key and quotes it back, as
            # OpenAI's 401 body does: the gateway must not pass it on.
            simulator.add_fault(
                FaultRule(
                    "status", status=401, times=1, message=f"Incorrect API key: {PROVIDER_SECRET}"
                )
            )
            simulator.add_fault(
                FaultRule(
                    "status", status=400, times=1, message=f"bad request with {PROVIDER_SECRET}"
                )
            )
            for _ in range(2):
                with pytest.raises(AIServiceError) as caught:
                    await client.chat(HELLO)
                errors.append(str(caught.value))
        async with AsyncAIClient(gateway.address, TEST_KEY + "-wrong") as wrong:
            with pytest.raises(AIServiceError) as caught:
                await wrong.chat(HELLO)
            errors.append(str(caught.value))
    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert lines, "expected the gateway to log something"
    for text in [*lines, *errors]:
        assert TEST_KEY not in text
        assert PROVIDER_SECRET not in text
    assert any("***" in e for e in errors)  # the 400's message was passed on, scrubbed


async def test_a_provider_key_across_the_message_cut_leaves_no_prefix(
    gateway: Gateway, simulator: Simulator
) -> None:
    # The upstream's message is cut to MAX_MESSAGE_CHARS: scrubbed first, or a key
    # straddling the cut would survive as a prefix nothing recognises any more.
    padding = "x" * (MAX_MESSAGE_CHARS - len(PROVIDER_SECRET) // 2)
    simulator.add_fault(FaultRule("status", status=400, times=1, message=padding + PROVIDER_SECRET))
    async with AsyncAIClient(gateway.address, TEST_KEY) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(HELLO)
    assert PROVIDER_SECRET[: len(PROVIDER_SECRET) // 2] not in caught.value.message


def test_no_status_carries_a_provider_key_whatever_made_its_message() -> None:
    # Errors raised mid-stream, or from a 200 body, are built by the adapters without
    # the key at hand: the one translation to a status scrubs every key it was given.
    keep_secret("sk-registered-0123456789")
    error = UpstreamUnavailable("upstream 'p' failed mid-stream: bad key sk-registered-0123456789")
    error.metadata["cause"] = "sk-registered-0123456789"
    _code, message, trailers = to_rpc_status(error)
    assert "sk-registered" not in message
    assert all(b"sk-registered" not in value for _, value in trailers if isinstance(value, bytes))
    assert "***" in message


def test_a_key_that_starts_with_another_is_scrubbed_whole_and_placeholders_are_left() -> None:
    keep_secret("sk-shared-prefix-01")
    keep_secret("sk-shared-prefix-01-and-its-longer-tail")
    keep_secret("ollama")  # a placeholder, not a credential: provider names stay readable
    message = to_rpc_status(
        UpstreamUnavailable("upstream 'ollama' echoed sk-shared-prefix-01-and-its-longer-tail")
    )[1]
    assert message == "upstream 'ollama' echoed ***"


HEADER_SECRET = "org/T0ken+Secret=value:42"
HEADER_VARIABLE = "AI_SERVICE_TEST_ORG_TOKEN"


def _forms_of_secrets() -> dict[str, str]:
    """What an upstream might echo: each configured secret in a shape exact matching misses."""
    basic = base64.b64encode(f"gateway:{PROVIDER_SECRET}".encode()).decode()
    return {
        "header value": HEADER_SECRET,
        "header value, URL-encoded": urllib.parse.quote(HEADER_SECRET, safe=""),
        "key, upper case": PROVIDER_SECRET.upper(),
        "key, cut": PROVIDER_SECRET[: len(PROVIDER_SECRET) * 2 // 3],
        "key, its tail": PROVIDER_SECRET[len(PROVIDER_SECRET) // 3 :],
        "key in basic auth": basic,
        "key, base64 URL-safe": base64.urlsafe_b64encode(PROVIDER_SECRET.encode()).decode(),
    }


async def test_every_configured_secret_in_every_form_is_scrubbed_from_statuses(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    tree = config_tree(simulator.base_url)
    tree["providers"][0]["headers"] = {"x-org-token": "${" + HEADER_VARIABLE + "}"}
    gateway = await start_gateway(
        parse_config(tree, env={**TEST_ENV, HEADER_VARIABLE: HEADER_SECRET})
    )
    forms = _forms_of_secrets()
    async with AsyncAIClient(gateway.address, TEST_KEY) as client:
        for name, form in forms.items():
            simulator.add_fault(
                FaultRule("status", status=400, times=1, message=f"echo of {name}: [{form}]")
            )
            with pytest.raises(AIServiceError) as caught:
                await client.chat(HELLO)
            message = caught.value.message
            assert form not in message, name
            # Base64 keeps the edges that also encode what surrounds the key.
            assert f"echo of {name}: [***]" in message or "basic" in name, message
    assert simulator.stats.received[-1].headers["x-org-token"] == HEADER_SECRET


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
async def test_a_provider_key_reflected_in_an_answer_is_scrubbed(
    gateway: Gateway, simulator: Simulator, streamed: bool
) -> None:
    # The simulator echoes the prompt, as an upstream that reflects what it was sent.
    request = ChatCompletionRequest(
        model="sim-gpt",
        messages=[Message(role="user", content=f"the key is {PROVIDER_SECRET.upper()} ok")],
    )
    async with AsyncAIClient(gateway.address, TEST_KEY) as client:
        if streamed:
            chunks = [c async for c in client.stream_chat(request)]
            text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
        else:
            text = (await client.chat(request)).choices[0].message.content
    assert text == "You said: the key is *** ok"


async def test_the_audit_log_keeps_no_secret(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    gateway = await start_gateway(
        observability={
            "metrics": {"enabled": False},
            "audit": {"path": str(audit), "include_prompts": True},
        }
    )
    leak = base64.b64encode(PROVIDER_SECRET.encode()).decode()
    request = ChatCompletionRequest(
        model="sim-gpt", messages=[Message(role="user", content=f"pass {leak} on")]
    )
    async with AsyncAIClient(gateway.address, TEST_KEY) as client:
        await client.chat(request)
    await gateway.stop()  # the audit log is flushed
    record = audit.read_text()
    assert "pass *** on" in record
    assert leak not in record
