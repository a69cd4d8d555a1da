"""What a call costs, from each provider's usage shape, and the prices behind it: exact,
computed apart here with decimals from the published price and the reported tokens."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai_service.config import ConfigError, PriceSettings, parse_config
from ai_service.limits.prices import NANOS, Pricebook, Rate
from ai_service.providers import anthropic, ollama
from ai_service.providers.anthropic import AnthropicProvider
from ai_service.providers.base import Deployment
from ai_service.providers.openai import OpenAIProvider, response_from_openai
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, Message, Usage
from tests.conftest import TEST_ENV, config_tree
from tests.fixtures import RecordedHttp, load_bytes, load_json, settings

#: Claude Sonnet 4.5's published prices (examples/prices.yaml).
SONNET = PriceSettings(input=3, cached_input=0.3, cache_write=3.75, output=15)
#: GPT-4o's, with a reasoning price of its own to show reasoning tokens priced apart.
GPT = PriceSettings(input=2.5, cached_input=1.25, output=10, reasoning=12)


def expected_nanos(*tokens_at_price: tuple[int, float]) -> int:
    """The sum of tokens times price per million, in nano-units, rounded half up: by hand."""
    exact = sum(Decimal(tokens) * Decimal(str(price)) for tokens, price in tokens_at_price)
    return int((exact / 1_000_000 * NANOS).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_openai_usage_prices_cached_and_reasoning_tokens_apart() -> None:
    usage = response_from_openai(load_json("openai/content_response.json")).usage
    # 1117 prompt tokens of which 1024 cached; 46 generated of which 32 reasoning.
    assert Rate.of(GPT).cost(usage) == expected_nanos(
        (1117 - 1024, 2.5), (1024, 1.25), (46 - 32, 10), (32, 12)
    )


def test_anthropic_usage_prices_cache_writes_and_reads_apart() -> None:
    usage = anthropic.response_from_anthropic(load_json("anthropic/thinking_response.json")).usage
    # input_tokens 21, cache_creation_input_tokens 188086, output_tokens 393.
    assert Rate.of(SONNET).cost(usage) == expected_nanos((21, 3), (188086, 3.75), (393, 15))
    assert Rate.of(SONNET).cost(usage) == 711_280_500  # $0.7112805


def test_ollama_usage_is_priced_from_its_eval_counts() -> None:
    usage = ollama.response_from_ollama(load_json("ollama/chat_response.json")).usage
    price = PriceSettings(input=0.1, output=0.4)
    assert Rate.of(price).cost(usage) == expected_nanos((26, 0.1), (298, 0.4))


async def test_streamed_usage_of_openai_and_anthropic_is_priced_from_the_last_chunk() -> None:
    request = ChatCompletionRequest(messages=[Message(role="user", content="hi")])
    openai = OpenAIProvider(
        settings("openai"), RecordedHttp(load_bytes("openai/stream_tool_calls.sse"))
    )
    chunks = [c async for c in openai.stream(request, Deployment("openai", "gpt-4o-mini"))]
    price = PriceSettings(input=0.15, cached_input=0.075, output=0.6)
    assert Rate.of(price).cost(chunks[-1].usage) == expected_nanos((82, 0.15), (17, 0.6))
    claude = AnthropicProvider(
        settings("anthropic"), RecordedHttp(load_bytes("anthropic/stream_text.sse"))
    )
    chunks = [c async for c in claude.stream(request, Deployment("anthropic", "claude"))]
    assert Rate.of(SONNET).cost(chunks[-1].usage) == expected_nanos((25, 3), (15, 15))


def test_a_price_left_unset_costs_what_its_tokens_would_otherwise_be_counted_as() -> None:
    usage = Usage(
        prompt_tokens=100,
        completion_tokens=50,
        cached_tokens=40,
        cache_write_tokens=10,
        reasoning_tokens=20,
    )
    plain = Rate.of(PriceSettings(input=2, output=8))
    assert plain.cost(usage) == expected_nanos((100, 2), (50, 8))


def test_costs_round_half_up_to_the_nano_unit() -> None:
    rate = Rate.of(PriceSettings(input=0.0005, output=0))  # 0.5 nano-units a token
    assert rate.cost(Usage(prompt_tokens=1)) == 1
    assert rate.cost(Usage(prompt_tokens=3)) == 2  # 1.5 → 2


@given(
    prompt=st.integers(0, 200_000),
    completion=st.integers(0, 100_000),
    cached=st.integers(0, 200_000),
    written=st.integers(0, 200_000),
    reasoning=st.integers(0, 100_000),
)
def test_a_reservation_is_never_less_than_what_the_call_can_cost(
    prompt: int, completion: int, cached: int, written: int, reasoning: int
) -> None:
    cached, written = min(cached, prompt), min(written, prompt - min(cached, prompt))
    reasoning = min(reasoning, completion)
    usage = Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=reasoning,
    )
    for price in (SONNET, GPT, PriceSettings(input=0.15, output=0.6)):
        rate = Rate.of(price)
        assert rate.cost(usage) <= rate.most(prompt, completion)


def _config(**cost: Any) -> Any:
    tree = config_tree("http://127.0.0.1:9")
    tree["cost"] = cost
    return parse_config(tree, env=TEST_ENV)


def test_a_model_without_a_price_is_unpriced_not_free() -> None:
    config = _config(prices={"sim-gpt": {"input": 1, "output": 2}})
    book = Pricebook(config.cost, config.models)
    assert book.rate("simulator/sim-gpt-1") == Rate.of(PriceSettings(input=1, output=2))
    assert book.rate("simulator/sim-other-1") is None
    assert book.unpriced == {"sim-gpt": (), "sim-other": ("simulator/sim-other-1",)}
    assert book.dearest(["sim-gpt", "sim-other"]) is None  # a fallback without a price


def test_a_deployments_own_price_wins_and_two_models_may_not_price_one_deployment_twice() -> None:
    tree = config_tree("http://127.0.0.1:9")
    tree["models"].append(
        {"name": "sim-twin", "provider": "simulator", "upstream_model": "sim-gpt-1"}
    )
    tree["cost"] = {
        "prices": {"sim-gpt": {"input": 1, "output": 1}, "sim-twin": {"input": 2, "output": 2}}
    }
    with pytest.raises(ConfigError, match="serves models 'sim-gpt' and 'sim-twin' at two prices"):
        parse_config(tree, env=TEST_ENV)
    tree["cost"]["prices"]["simulator/sim-gpt-1"] = {"input": 3, "output": 3}
    config = parse_config(tree, env=TEST_ENV)
    book = Pricebook(config.cost, config.models)
    assert book.rate("simulator/sim-gpt-1") == Rate.of(PriceSettings(input=3, output=3))


@pytest.mark.parametrize(
    ("cost", "problem"),
    [
        ({"prices": {"sim-gtp": {"input": 1, "output": 1}}}, "cost.prices.sim-gtp: names no"),
        ({"prices": {"sim-gpt": {"input": 1.0000001, "output": 1}}}, "at most 6 decimals"),
        ({"prices": {"sim-gpt": {"input": -1, "output": 1}}}, "greater than or equal to 0"),
        ({"prices": {"sim-gpt": {"input": 1}}}, "cost.prices.sim-gpt.output: Field required"),
        ({"currency": "dollars"}, "cost.currency: must be a three-letter currency code"),
    ],
)
def test_a_bad_price_list_is_refused_naming_the_field(cost: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        _config(**cost)


@pytest.mark.parametrize(
    ("budget", "problem"),
    [
        ({"period": "day"}, "give amount, soft, or both"),
        ({"amount": 10, "soft": 10}, r"soft \(10\) must be below amount \(10\)"),
        ({"amount": 10, "period": "year"}, r"auth.keys\[0\].budget.period"),
    ],
)
def test_a_bad_budget_is_refused_naming_the_field(budget: dict[str, Any], problem: str) -> None:
    tree = config_tree("http://127.0.0.1:9")
    tree["auth"]["keys"][0]["budget"] = budget
    with pytest.raises(ConfigError, match=problem):
        parse_config(tree, env=TEST_ENV)


def test_teams_are_named_once() -> None:
    tree = config_tree("http://127.0.0.1:9")
    tree["auth"]["teams"] = [{"name": "a", "budget": {"amount": 1}}, {"name": "a"}]
    with pytest.raises(ConfigError, match=r"auth.teams\[1\].name: duplicate name 'a'"):
        parse_config(tree, env=TEST_ENV)
