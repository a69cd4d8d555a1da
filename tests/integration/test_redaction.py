"""PII redaction end to end: the three modes (the simulator records what the upstream
received), redacted answers unary and streamed, and what the audit log names."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from ai_service_protos.ai_service_pb2 import EmbedRequest
from tests.conftest import RESTRICTED_KEY, TEST_KEY, StartGateway, single


def ask(text: str, model: str = "sim-gpt", stream: bool = False) -> ChatCompletionRequest:
    return ChatCompletionRequest(model=model, messages=[Message(role="user", content=text)])


PROMPT = "reach me at alice@example.com or 4111 1111 1111 1111"


def upstream_prompt(simulator: Simulator) -> str:
    content: str = simulator.stats.received[-1].body["messages"][-1]["content"]
    return content


async def test_redact_mode_replaces_before_the_upstream_sees_it(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(redaction={"models": {"sim-gpt": "redact"}})
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        response = await client.chat(ask(PROMPT))
        assert upstream_prompt(simulator) == (
            "reach me at [REDACTED:EMAIL] or [REDACTED:CREDIT_CARD]"
        )
        assert "alice@example.com" not in response.choices[0].message.content
        await client.chat(ask(PROMPT, model="sim-other"))  # mode off for this model
        assert upstream_prompt(simulator) == PROMPT


async def test_block_mode_refuses_naming_the_kinds_and_sends_nothing(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(redaction={"keys": {"tester": "block"}})
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as refused:
            await client.chat(ask(PROMPT))
        assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.reason == "SENSITIVE_DATA"
        assert "CREDIT_CARD,EMAIL" in str(refused.value)
        assert simulator.stats.total_requests == 0
        assert (await client.chat(ask("nothing personal here"))).choices


async def test_log_only_mode_passes_the_prompt_untouched(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(redaction={"mode": "log-only"})
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        await client.chat(ask(PROMPT))
    assert upstream_prompt(simulator) == PROMPT


async def test_answers_are_redacted_unary_and_streamed(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # The simulator echoes the prompt (redacted on its way up) after "You said": a kind
    # only the answer holds. Split over two streamed words, the window must hold it
    # back until it is whole.
    simulator.config.tokens_per_second = 200  # one chunk per word
    gateway = await start_gateway(
        redaction={
            "mode": "log-only",
            "models": {"sim-gpt": "redact"},
            "answers": True,
            "custom": [{"name": "ECHO", "pattern": "You said"}],
        }
    )
    text = "call +1 415 555 2671 today"
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        unary = await client.chat(ask(text))
        chunks = [c async for c in client.stream_chat(ask(text))]
    expected = "[REDACTED:ECHO]: call [REDACTED:PHONE] today"
    assert unary.choices[0].message.content == expected
    assert len(chunks) > 4
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == expected


async def test_the_audit_names_the_kinds_found_blocked_or_in_a_unary_answer(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    gateway = await start_gateway(
        observability={"metrics": {"enabled": False}, "audit": {"path": str(audit)}},
        # A kind only the answer holds: the simulator's "You said: ..." echo.
        redaction={
            "mode": "block",
            "keys": {"tester": "redact"},
            "answers": True,
            "custom": [{"name": "ECHO", "pattern": "You said"}],
        },
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        answer = await client.chat(ask("hello"))
    async with AsyncAIClient(gateway.address, RESTRICTED_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as refused:
            await client.chat(ask(PROMPT))
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    await gateway.stop()  # the audit log is flushed
    assert answer.choices[0].message.content == "[REDACTED:ECHO]: hello"
    answered, blocked = [json.loads(line) for line in audit.read_text().splitlines()]
    assert answered["pii"] == ["ECHO"]
    assert (blocked["reason"], blocked["pii"]) == ("SENSITIVE_DATA", ["CREDIT_CARD", "EMAIL"])


async def test_small_calls_are_served_while_a_large_prompt_is_being_scanned(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    """A long prompt is scanned a slice at a time, the event loop serving other calls in
    between: small calls sent one after another while a large one is being scanned are
    answered, many of them, before the large one has even gone upstream. (A scan in one
    piece holds every small call until it has finished: at most the one or two answered
    while the large request was still arriving would count.)"""
    # A scan of seconds (0.3-0.85 µs a character) against a small call's milliseconds:
    # the limit is raised for a 4 MB prompt. Counting small calls, not timing one, keeps
    # a stall of the machine during one of them from failing the test.
    gateway = await start_gateway(
        redaction={"mode": "redact"},
        observability={"metrics": {"listen": "127.0.0.1:0"}},
        limits={"max_request_bytes": 5 * 1024 * 1024},
    )
    # In a system message: the simulator echoes the user's, and the answer stays short.
    large = ChatCompletionRequest(
        model="sim-other",
        messages=[
            Message(role="system", content="lorem ipsum dolor sit amet " * (4_000_000 // 27)),
            Message(role="user", content="summarise"),
        ],
    )
    answered_before_large_went_upstream = 0
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=60) as client:
        large_call = asyncio.ensure_future(client.chat(large))
        # The gateway is serving the large call (its scan holds it before any upstream).
        # Read in-process, not by a scrape: a scrape competes with the scan for the loop
        # and the GIL, and could see the call only once its scan had nearly finished.
        for _ in range(10_000):
            if large_call.done() or gateway.observability.calls.count:
                break
            await asyncio.sleep(0.001)
        clock = asyncio.get_running_loop().time
        started = clock()
        for _ in range(1_000):
            small = await client.chat(ask("hello"))
            assert small.choices[0].message.content == "You said: hello"
            if simulator.stats.count(model="sim-other-1"):
                break
            answered_before_large_went_upstream += 1
        small_calls_seconds = clock() - started
        answer = await large_call
    assert answered_before_large_went_upstream >= 5, (
        f"{answered_before_large_went_upstream} small calls answered in "
        f"{small_calls_seconds:.2f} s before the large one went upstream"
    )
    assert answer.choices[0].message.content == "You said: summarise"


EMAIL = "alice@example.com"
#: Each text field the upstream receives besides message contents, holding an address.
FIELDS: dict[str, dict[str, Any]] = {
    "tool description": {
        "tools": [{"function": {"name": "mail", "description": f"writes to {EMAIL}"}}]
    },
    "tool parameters": {
        "tools": [
            {
                "function": {
                    "name": "mail",
                    "parameters_json": json.dumps({"type": "object", "default": EMAIL}),
                }
            }
        ]
    },
    "tool parameters as a struct": {
        "tools": [{"function": {"name": "mail", "parameters_struct": {"example": EMAIL}}}]
    },
    "tool-call arguments, escaped": {
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "function": {
                            "name": "mail",
                            "arguments": '{"to": "alice\\u0040example.com"}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sent"},
        ]
    },
    "user": {"user": EMAIL},
    "stop": {"stop": [EMAIL]},
    "json_schema": {
        "response_format": {
            "type": "json_schema",
            "schema_name": "answer",
            "json_schema": json.dumps({"type": "object", "description": f"ask {EMAIL}"}),
        }
    },
    "message name": {
        "messages": [{"role": "user", "content": "hi", "name": "alice_4111111111111111"}]
    },
}


def with_field(fields: dict[str, Any]) -> ChatCompletionRequest:
    request = ChatCompletionRequest(model="sim-gpt")
    json_format.ParseDict({"messages": [{"role": "user", "content": "hi"}], **fields}, request)
    return request


@pytest.mark.parametrize("field", list(FIELDS))
async def test_block_mode_sees_every_field_that_goes_upstream(
    start_gateway: StartGateway, simulator: Simulator, field: str
) -> None:
    gateway = await start_gateway(redaction={"mode": "block"})
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as refused:
            await client.chat(with_field(FIELDS[field]))
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert simulator.stats.total_requests == 0


async def test_redact_mode_redacts_every_field_that_goes_upstream(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    gateway = await start_gateway(redaction={"mode": "redact"})
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        for field, fields in FIELDS.items():
            await client.chat(with_field(fields))
            body = json.dumps(simulator.stats.received[-1].body)
            assert EMAIL not in body and "alice\\\\u0040" not in body, field
            assert "4111111111111111" not in body, field
            assert "REDACTED" in body, field


async def test_the_strictest_mode_of_every_model_a_call_may_reach_applies(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    # sim-gpt itself is not scanned, but its fallback may not be sent personal data:
    # the prompt is refused before any upstream sees it, whichever would serve it.
    gateway = await start_gateway(
        models=[
            single("sim-gpt", "sim-gpt-1", fallbacks=["m-strict"]),
            single("m-strict", "strict-1"),
        ],
        redaction={"mode": "off", "models": {"m-strict": "block"}},
    )
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as refused:
            await client.chat(ask(PROMPT))
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert simulator.stats.total_requests == 0


EMBEDDER = single("embedder", "sim-embed-1", capabilities={"embeddings": True})


@pytest.mark.parametrize("mode", ["block", "redact"])
async def test_embed_inputs_are_screened_like_a_prompt(
    start_gateway: StartGateway, simulator: Simulator, mode: str
) -> None:
    gateway = await start_gateway(
        models=[EMBEDDER],
        auth={"keys": [{"name": "tester", "key": TEST_KEY}]},
        redaction={"models": {"embedder": mode}},
    )
    request = EmbedRequest(model="embedder", inputs=["plain words", PROMPT])
    received = len(simulator.stats.received)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        if mode == "block":
            with pytest.raises(AIServiceError) as refused:
                await client.embed(request)
            assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
            assert len(simulator.stats.received) == received  # nothing went upstream
            return
        answer = await client.embed(request)
    assert len(answer.embeddings) == 2
    assert simulator.stats.received[-1].body["input"] == [
        "plain words",
        "reach me at [REDACTED:EMAIL] or [REDACTED:CREDIT_CARD]",
    ]
