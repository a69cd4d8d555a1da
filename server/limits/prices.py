"""What a call costs: the configured prices applied to the usage the provider reported.

Prices are kept as integers (millionths of the currency per million tokens) and costs as
integers of nano-units (10^-9 of the currency), so a cost is exact, and so is any sum of
costs, whatever the order replicas add them in. A call's cost is its tokens of each kind
at that kind's price: prompt tokens read fresh, read from the provider's prompt cache,
and written to it; generated tokens, and of those the ones spent reasoning. The adapters
report every provider's usage in that one shape (Anthropic's `input_tokens` with its
cache reads and writes added to `prompt_tokens`; OpenAI's cached and reasoning tokens as
parts of its prompt and completion).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from ai_service.config import CostSettings, ModelSettings, PriceSettings, deployment_prices
from ai_service_protos.ai_service_pb2 import Usage

#: Nano-units in one unit of the currency.
NANOS = 1_000_000_000
_MICROS = 1_000_000


def _micros(price: float) -> int:
    return int(Decimal(str(price)) * _MICROS)


@dataclass(frozen=True, slots=True)
class Rate:
    """A price list entry, in millionths of the currency per million tokens: a token
    costs `rate / 1000` nano-units."""

    input: int
    output: int
    cached_input: int
    cache_write: int
    reasoning: int

    @classmethod
    def of(cls, price: PriceSettings) -> Rate:
        def other(value: float | None, default: float) -> int:
            return _micros(default if value is None else value)

        return cls(
            input=_micros(price.input),
            output=_micros(price.output),
            cached_input=other(price.cached_input, price.input),
            cache_write=other(price.cache_write, price.input),
            reasoning=other(price.reasoning, price.output),
        )

    def cost(self, usage: Usage) -> int:
        """Nano-units, rounded half up from the exact cost."""
        cached, written = usage.cached_tokens, usage.cache_write_tokens
        fresh = max(usage.prompt_tokens - cached - written, 0)
        reasoning = usage.reasoning_tokens
        plain = max(usage.completion_tokens - reasoning, 0)
        micros = (
            fresh * self.input
            + cached * self.cached_input
            + written * self.cache_write
            + plain * self.output
            + reasoning * self.reasoning
        )
        return (micros + 500) // 1000

    def most(self, prompt: int, completion: int) -> int:
        """The most `prompt` + `completion` tokens can cost, in nano-units (rounded up):
        each at the dearest price its kind may be charged."""
        micros = prompt * max(self.input, self.cached_input, self.cache_write) + completion * max(
            self.output, self.reasoning
        )
        return -(-micros // 1000)

    def dearest(self, other: Rate) -> Rate:
        """Each price the higher of the two (a call that may be served by either)."""
        return Rate(
            max(self.input, other.input),
            max(self.output, other.output),
            max(self.cached_input, other.cached_input),
            max(self.cache_write, other.cache_write),
            max(self.reasoning, other.reasoning),
        )


class Pricebook:
    """The configured prices, by deployment, and the dearest of each model's deployments."""

    def __init__(self, settings: CostSettings, models: Sequence[ModelSettings]) -> None:
        self.currency = settings.currency
        prices = deployment_prices(models, settings.prices)
        self._by_deployment: dict[str, Rate | None] = {
            name: Rate.of(price) if price is not None else None for name, price in prices.items()
        }
        self._by_model: dict[str, Rate | None] = {
            model.name: _dearest(
                self._by_deployment[f"{t.provider}/{t.upstream_model}"] for t in model.targets
            )
            for model in models
        }
        #: Each model's deployments without a price.
        self.unpriced: Mapping[str, tuple[str, ...]] = {
            model.name: tuple(
                name
                for t in model.targets
                if self._by_deployment[name := f"{t.provider}/{t.upstream_model}"] is None
            )
            for model in models
        }

    def rate(self, deployment: str) -> Rate | None:
        """The price of `deployment` (`provider/upstream_model`); None: unpriced."""
        return self._by_deployment.get(deployment)

    def dearest(self, models: Iterable[str]) -> Rate | None:
        """The dearest price any deployment of `models` may charge; None when one of
        them has no price."""
        return _dearest(self._by_model.get(name) for name in models)


def _dearest(rates: Iterable[Rate | None]) -> Rate | None:
    found: Rate | None = None
    for rate in rates:
        if rate is None:
            return None
        found = rate if found is None else found.dearest(rate)
    return found


def amount(nanos: int) -> float:
    """Nano-units as an amount of the currency."""
    return nanos / NANOS


def nanos_of(value: float) -> int:
    """An amount of the currency (a budget) as nano-units."""
    return int(Decimal(str(value)) * NANOS)
