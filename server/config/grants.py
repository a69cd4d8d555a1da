"""What a caller may do, whatever identified it: models, limits, budget, team and roles.

A config key, a certificate identity, a role and a key issued at runtime all carry the
same grants, so every source of identity is limited the same way.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ai_service.config.base import StrictSettings


class RateLimitSettings(StrictSettings):
    #: Sustained requests per minute per key; 0 switches the limit off.
    requests_per_minute: int = Field(600, ge=0)
    #: Requests a key may send at once before the rate applies (default: a minute's worth).
    burst: int | None = Field(None, gt=0)
    #: Sustained tokens (prompt + completion) per minute per key; 0 switches it off.
    tokens_per_minute: int = Field(0, ge=0)
    #: Tokens a key may spend at once (default: a minute's worth).
    token_burst: int | None = Field(None, gt=0)


class BudgetSettings(StrictSettings):
    """A spending budget per period (UTC days, weeks from Monday, calendar months), in the
    currency of the price list (`cost.currency`): a hard `amount`, a `soft` one, or both."""

    #: The most that may be spent per period: a call that could take the spend past it is
    #: refused (RESOURCE_EXHAUSTED). Unset: no hard limit (give `soft`).
    amount: float | None = Field(None, gt=0)
    period: Literal["day", "week", "month"] = "month"
    #: Past this spend, calls are still served; the first of each period is logged and
    #: each is counted (ai_gateway_budget_soft_exceeded_total).
    soft: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _a_limit(self) -> BudgetSettings:
        if self.amount is None and self.soft is None:
            raise ValueError("give amount, soft, or both")
        if self.amount is not None and self.soft is not None and self.soft >= self.amount:
            raise ValueError(f"soft ({self.soft:g}) must be below amount ({self.amount:g})")
        return self


class Grants(StrictSettings):
    """Models and limits; an unset grant falls back to the caller's role, then the defaults."""

    #: Models the caller may use; empty means all (or its role's).
    models: tuple[str, ...] = ()
    #: Overrides the default rate limit for this caller.
    rate_limit: RateLimitSettings | None = None
    #: The most max_tokens this caller may ask for (a call that sets none gets this cap).
    max_output_tokens: int | None = Field(None, gt=0)
    #: Streams this caller may hold open at once (per gateway process).
    max_concurrent_streams: int | None = Field(None, gt=0)
    #: The caller's own spending budget (its team's is `auth.teams[].budget`).
    budget: BudgetSettings | None = None


class CallerGrants(Grants):
    """The grants of one identity: its own, plus the team it belongs to and its roles."""

    #: The team the caller belongs to (audit, metrics and budgets group by it).
    team: str | None = Field(None, min_length=1)
    #: Roles from `auth.roles`: the first one listed there that the caller holds
    #: gives the grants the caller does not set itself; `admin` from any of them.
    roles: tuple[str, ...] = ()


class TeamSettings(StrictSettings):
    """A team's settings: its budget, which the spend of every member counts against
    (a member's own budget counts only its own spend)."""

    name: str = Field(min_length=1)
    budget: BudgetSettings | None = None


class RoleSettings(Grants):
    """A named set of grants that keys, certificates and tokens refer to."""

    name: str = Field(min_length=1)
    #: May manage keys through the Admin service.
    admin: bool = False
