"""What calls cost: the price list, its currency, and how long spend history is kept."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal

from pydantic import Field, field_validator

from ai_service.config.base import StrictSettings
from ai_service.config.models import ModelSettings

#: A price has at most this many decimals: it is kept exactly, as an integer of
#: millionths of the currency per million tokens.
PRICE_DECIMALS = 6


class PriceSettings(StrictSettings):
    """One model's (or deployment's) prices, in the currency per million tokens. A price
    left unset for a kind of token is the dearer one that kind would otherwise be counted
    as, so an omission never makes a call look cheaper than it was."""

    #: Prompt tokens read fresh (neither from nor into the provider's prompt cache).
    input: float = Field(ge=0)
    #: Generated tokens.
    output: float = Field(ge=0)
    #: Prompt tokens read from the provider's prompt cache; unset: `input`.
    cached_input: float | None = Field(None, ge=0)
    #: Prompt tokens written to the provider's prompt cache (Anthropic: 1.25x input for
    #: 5-minute entries, 2x for 1-hour ones; the usage does not tell them apart, so give
    #: the one you use); unset: `input`.
    cache_write: float | None = Field(None, ge=0)
    #: Generated tokens spent reasoning (OpenAI reports them apart); unset: `output`.
    reasoning: float | None = Field(None, ge=0)

    @field_validator("input", "output", "cached_input", "cache_write", "reasoning")
    @classmethod
    def _exact(cls, value: float | None) -> float | None:
        if value is not None and -Decimal(str(value)).as_tuple().exponent > PRICE_DECIMALS:  # type: ignore[operator]
            raise ValueError(f"at most {PRICE_DECIMALS} decimals")
        return value


class CostSettings(StrictSettings):
    """Prices, so every call has a cost (and budgets something to count)."""

    #: The currency of every price and budget (an ISO 4217 code, shown with amounts).
    currency: str = "USD"
    #: Prices per million tokens by public model name, or by deployment
    #: (`provider/upstream_model`), which wins over its model's. A model with no price is
    #: served and reported as unpriced (never as free); a caller under a budget may not
    #: use it. There is no built-in price list: prices change, so they are yours to keep.
    prices: dict[str, PriceSettings] = Field(default_factory=dict)
    #: Days of hourly spend history kept (per key, per team and per model) for GetUsage;
    #: longer history lives in the metrics (ai_gateway_cost_total).
    retention_days: int = Field(35, ge=1, le=400)

    @field_validator("currency")
    @classmethod
    def _code(cls, currency: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", currency):
            raise ValueError("must be a three-letter currency code, e.g. USD or EUR")
        return currency


def deployment_prices(
    models: Sequence[ModelSettings], prices: Mapping[str, PriceSettings]
) -> dict[str, PriceSettings | None]:
    """Each deployment (`provider/upstream_model`) → its price, from the deployment's own
    entry or else its model's (None: unpriced). A deployment two models share has one
    price: two models giving it two are refused, as is a name that prices nothing."""
    found: dict[str, PriceSettings | None] = {}
    owner: dict[str, str] = {}
    for model in models:
        for target in model.targets:
            name = f"{target.provider}/{target.upstream_model}"
            price = prices.get(name) or prices.get(model.name)
            if name in found and found[name] != price:
                raise ValueError(
                    f"cost.prices: deployment {name} serves models {owner[name]!r} and "
                    f"{model.name!r} at two prices; give the deployment's own ({name!r})"
                )
            found[name] = price
            owner.setdefault(name, model.name)
    names = {model.name for model in models} | set(found)
    for name in prices:
        if name not in names:
            raise ValueError(f"cost.prices.{name}: names no model and no deployment")
    return found
