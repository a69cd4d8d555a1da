"""Token budgets: what a call reserves before it goes upstream, and how it settles after."""

from __future__ import annotations

import grpc
import pytest

from ai_service.config import ModelSettings
from ai_service.errors import RateLimited
from ai_service.limits.buckets import Decision, InMemoryRateLimiter
from ai_service.limits.rules import RateRule
from ai_service.limits.token_quota import (
    TokenQuota,
    estimate_chars_as_tokens,
    estimate_prompt_tokens,
)
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    FunctionDefinition,
    Message,
    Tool,
)
from tests.clock import ManualClock

RULE = RateRule(per_minute=600, burst=1000)


class Recording:
    """The in-process limiter, with what the quota asked of it written down."""

    def __init__(self) -> None:
        self.limiter = InMemoryRateLimiter(ManualClock())
        self.calls: list[tuple[str, str, float]] = []

    async def take(self, subject: str, amount: float, rule: RateRule) -> Decision:
        self.calls.append(("take", subject, amount))
        return await self.limiter.take(subject, amount, rule)

    async def charge(self, subject: str, amount: float, rule: RateRule) -> None:
        self.calls.append(("charge", subject, amount))
        await self.limiter.charge(subject, amount, rule)

    async def aclose(self) -> None:
        pass


def model(**settings: object) -> ModelSettings:
    return ModelSettings.model_validate(
        {"name": "m", "provider": "p", "upstream_model": "u", **settings}
    )


def request(*messages: Message, **fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=messages, **fields)


def test_a_prompt_is_a_token_per_four_characters_rounded_up_and_three_per_message() -> None:
    assert estimate_prompt_tokens(request()) == 0
    assert estimate_prompt_tokens(request(Message(role="user", content="abcd"))) == 1 + 3
    assert estimate_prompt_tokens(request(Message(role="user", content="abcde"))) == 2 + 3
    two = request(
        Message(role="user", content="a" * 8, name="b" * 8),  # 16 characters
        Message(role="assistant", content="c" * 8),  # 24 in all: 6 tokens
    )
    assert estimate_prompt_tokens(two) == 6 + 6


def test_tools_count_toward_the_prompt() -> None:
    tool = Tool(
        type="function",
        function=FunctionDefinition(name="f", description="d" * 8, parameters_json="{}" * 4),
    )
    assert estimate_prompt_tokens(request(tools=[tool])) == 4  # 16 characters
    assert estimate_prompt_tokens(request(tools=[tool, tool])) == 8  # 32


def test_characters_as_tokens_round_up() -> None:
    assert [estimate_chars_as_tokens(n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


async def test_no_rule_reserves_nothing_and_settles_nothing() -> None:
    recording = Recording()
    quota = TokenQuota(recording)
    big = request(Message(role="user", content="x" * 100_000))
    assert await quota.reserve("k", None, big, model()) is None
    assert await quota.reserve_estimate("k", None, 10, 10) is None
    await quota.settle(None, 500)
    assert recording.calls == []


async def test_a_call_reserves_its_prompt_and_its_max_tokens() -> None:
    recording = Recording()
    quota = TokenQuota(recording)
    prompt = request(Message(role="user", content="x" * 40), max_tokens=50)  # 10 + 3
    reservation = await quota.reserve("k", RULE, prompt, model())
    assert reservation is not None
    assert (reservation.subject, reservation.rule) == ("tokens:k", RULE)
    assert (reservation.tokens, reservation.prompt_estimate) == (63, 13)
    assert recording.calls == [("take", "tokens:k", 63)]


async def test_without_max_tokens_a_call_reserves_the_model_s_default() -> None:
    quota = TokenQuota(Recording())
    prompt = request(Message(role="user", content="x" * 40))  # 13
    reservation = await quota.reserve("k", RULE, prompt, model(default_max_tokens=200))
    assert reservation is not None and reservation.tokens == 213
    capped = model(default_max_tokens=200, max_output_tokens=100)
    reservation = await quota.reserve("k", RULE, prompt, capped)
    assert reservation is not None and reservation.tokens == 113
    zero = request(Message(role="user", content="x" * 40), max_tokens=0)  # set, even to 0
    reservation = await quota.reserve("k", RULE, zero, model(default_max_tokens=200))
    assert reservation is not None and reservation.tokens == 13


async def test_a_call_larger_than_the_burst_reserves_the_burst() -> None:
    quota = TokenQuota(Recording())
    reservation = await quota.reserve_estimate("k", RULE, 900, 200)
    assert reservation is not None
    assert (reservation.tokens, reservation.prompt_estimate) == (1000, 900)
    exact = await quota.reserve_estimate("j", RULE, 400, 600)
    assert exact is not None and exact.tokens == 1000


async def test_a_call_over_the_limit_is_refused_with_when_to_come_back() -> None:
    recording = Recording()
    quota = TokenQuota(recording)
    assert await quota.reserve_estimate("k", RULE, 900, 0) is not None
    with pytest.raises(RateLimited) as refused:
        await quota.reserve_estimate("k", RULE, 150, 0)  # 100 left, 50 more at 10 a second
    error = refused.value
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.retry_after == pytest.approx(5.0)
    assert (error.subject, error.quota) == ("key:k", "600 tokens per minute")
    assert error.message == (
        "token limit of 600 tokens/minute exceeded for key 'k' (this call reserves ~150); "
        "retry after 5.00s"
    )
    # Refused: nothing was taken, and what is left is still there.
    assert await quota.reserve_estimate("k", RULE, 100, 0) is not None


async def test_settling_charges_or_refunds_the_difference() -> None:
    recording = Recording()
    quota = TokenQuota(recording)
    reservation = await quota.reserve_estimate("k", RULE, 100, 100)
    await quota.settle(reservation, 250)
    await quota.settle(reservation, 120)
    await quota.settle(reservation, 200)  # exactly the estimate: no call
    assert recording.calls[1:] == [("charge", "tokens:k", 50), ("charge", "tokens:k", -80)]
    # 1000 - 200 - 50 + 80: 830 left
    assert (await recording.limiter.take("tokens:k", 830, RULE)).allowed
    assert not (await recording.limiter.take("tokens:k", 1, RULE)).allowed
