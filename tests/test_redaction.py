"""PII redaction: each detector's positives and negatives, the three modes end to end
(the simulator records what the upstream received), and streamed answers."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from ai_service.config import RedactionSettings
from ai_service.policy.redaction import StreamRedactor, redactor_for
from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from ai_service_protos.ai_service_pb2 import ChatCompletionChunk
from tests.conftest import RESTRICTED_KEY, TEST_KEY, StartGateway

REDACTOR = redactor_for(
    RedactionSettings(custom=[{"name": "EMPLOYEE_ID", "pattern": r"EMP-\d{6}"}])
)

CASES = [
    # (text, kinds found)
    ("mail alice@example.com now", ["EMAIL"]),
    ("a.b+tag@mail.example.co.uk", ["EMAIL"]),
    ("not an email: alice@localhost", []),
    ("card 4111 1111 1111 1111", ["CREDIT_CARD"]),
    ("card 4111-1111-1111-1111", ["CREDIT_CARD"]),
    ("card 378282246310005", ["CREDIT_CARD"]),
    ("order 1234567812345678 fails Luhn", []),
    # A candidate failing its check hides neither another kind at its start nor a
    # valid one of its own kind inside it.
    ("call me at 0044 20 7946 0958", ["PHONE"]),
    ("qty 3 4111 1111 1111 1111", ["CREDIT_CARD"]),
    ("qty 3 5 4111 1111 1111 1111", ["CREDIT_CARD"]),
    ("card 4111 1111 1111 1111 7 items", ["CREDIT_CARD"]),
    ("ssn 123-45-6789", ["US_SSN"]),
    ("ssn 000-45-6789 is never issued", []),
    ("call +1 415-555-2671", ["PHONE"]),
    ("call (415) 555-2671", ["PHONE"]),
    ("call +442079460958", ["PHONE"]),
    ("on 2024-01-31 at noon", []),
    ("order 12345 shipped", []),
    ("host 192.168.1.20 up", ["IP_ADDRESS"]),
    ("version 1.2.3.4.5 is not an address", []),
    ("999.1.1.1 is not an address", []),
    ("v6 2001:db8::8a2e:370:7334 up", ["IP_ADDRESS"]),
    ("loopback ::1", ["IP_ADDRESS"]),
    ("at 12:30:45 sharp", []),
    ("iban GB82 WEST 1234 5698 7654 32", ["IBAN"]),
    ("iban DE89370400440532013000", ["IBAN"]),
    ("iban GB82 WEST 1234 5698 7654 33 fails mod-97", []),
    ("key sk-abcdefghijklmnop1234", ["SECRET"]),
    ("aws AKIAIOSFODNN7EXAMPLE", ["SECRET"]),
    ("sk-short is not a key", []),
    ("badge EMP-123456", ["EMPLOYEE_ID"]),
    ("plain words only", []),
]


@pytest.mark.parametrize(("text", "kinds"), CASES, ids=[c[0] for c in CASES])
def test_detector_table(text: str, kinds: list[str]) -> None:
    assert [f.kind for f in REDACTOR.find(text)] == kinds
    redacted = REDACTOR.redact(text)
    for kind in kinds:
        assert f"[REDACTED:{kind}]" in redacted
    if not kinds:
        assert redacted == text


def test_redaction_replaces_only_the_match() -> None:
    assert REDACTOR.redact("mail alice@example.com or call +1 415-555-2671.") == (
        "mail [REDACTED:EMAIL] or call [REDACTED:PHONE]."
    )


def chunk(text: str, finish: str = "") -> ChatCompletionChunk:
    piece = ChatCompletionChunk()
    choice = piece.choices.add(index=0, finish_reason=finish)
    choice.delta.content = text
    return piece


def test_stream_redaction_catches_an_email_split_across_two_chunks() -> None:
    stream = StreamRedactor(REDACTOR, window=32)
    pieces = ["write to ali", "ce@example.com please, thanks", " bye", ""]
    out = []
    for i, text in enumerate(pieces):
        c = chunk(text, finish="stop" if i == len(pieces) - 1 else "")
        stream.apply(c)
        out.append(c.choices[0].delta.content)
    assert "".join(out) == "write to [REDACTED:EMAIL] please, thanks bye"
    assert "ali" not in out[0]  # the start of the address was held back, not leaked
    assert stream.found == {"EMAIL"}


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
    # The simulator echoes the prompt; with the phone split over four streamed words
    # the window must hold it back until it is whole.
    simulator.config.tokens_per_second = 200  # one chunk per word
    gateway = await start_gateway(
        redaction={"mode": "log-only", "models": {"sim-gpt": "redact"}, "answers": True}
    )
    text = "call +1 415 555 2671 today"
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        unary = await client.chat(ask(text))
        chunks = [c async for c in client.stream_chat(ask(text))]
    expected = "You said: call [REDACTED:PHONE] today"
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
        with pytest.raises(AIServiceError):
            await client.chat(ask(PROMPT))
    await gateway.stop()  # the audit log is flushed
    assert answer.choices[0].message.content == "[REDACTED:ECHO]: hello"
    answered, blocked = [json.loads(line) for line in audit.read_text().splitlines()]
    assert answered["pii"] == ["ECHO"]
    assert (blocked["reason"], blocked["pii"]) == ("SENSITIVE_DATA", ["CREDIT_CARD", "EMAIL"])
