"""Who is calling: one `Caller`, whatever identified it, and the context var that carries it.

The interceptors put the caller of a call in `current_caller`; every stage after them
(limits, routing, policy, the servicer) reads it from there, in the same task. A
config key, a key issued at runtime, a token and a certificate all give a `Caller`
(`resolve`), so limits, allow-lists, redaction, audit and metrics treat them alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from ai_service.config import CallerGrants, RateLimitSettings, RoleSettings
from ai_service.limits.ledger import BudgetRule, budget_rule
from ai_service.limits.rules import RateRule

#: What identified a caller (the audit record's `identity`).
Source = Literal["config_key", "virtual_key", "jwt", "certificate", "anonymous"]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its configured name, never its secret."""

    name: str
    #: The models this caller may use; empty means every model.
    models: frozenset[str]
    #: Its request rate limit; None when unlimited.
    rate: RateRule | None
    #: Its token rate limit; None when unlimited.
    tokens: RateRule | None = None
    #: The most max_tokens it may ask for; None when only the model caps it.
    max_output_tokens: int | None = None
    #: Streams it may hold open at once; None when unlimited.
    max_concurrent_streams: int | None = None
    #: What identified it.
    source: Source = "config_key"
    team: str | None = None
    #: The configured roles it holds.
    roles: frozenset[str] = frozenset()
    #: May manage keys through the Admin service.
    admin: bool = False
    #: Its own spending budget (its team's is apart: `auth.teams`); None: none.
    budget: BudgetRule | None = None

    def may_use(self, model: str) -> bool:
        return not self.models or model in self.models


current_caller: ContextVar[Caller] = ContextVar("current_caller")


def rate_rule(settings: RateLimitSettings) -> RateRule | None:
    if settings.requests_per_minute == 0:
        return None
    return RateRule(
        per_minute=settings.requests_per_minute,
        burst=settings.burst or settings.requests_per_minute,
    )


def token_rule(settings: RateLimitSettings) -> RateRule | None:
    if settings.tokens_per_minute == 0:
        return None
    return RateRule(
        per_minute=settings.tokens_per_minute,
        burst=settings.token_burst or settings.tokens_per_minute,
    )


class Grantor:
    """Turns an identity's grants into its `Caller`: what the identity does not set
    itself comes from the first configured role it holds, then the gateway's defaults."""

    def __init__(self, roles: Iterable[RoleSettings], default_rate: RateLimitSettings) -> None:
        self._roles: Mapping[str, RoleSettings] = {role.name: role for role in roles}
        self._default_rate = default_rate

    def known_roles(self, names: Iterable[str]) -> tuple[str, ...]:
        """The configured roles among `names`, in the order `auth.roles` lists them."""
        held = set(names)
        return tuple(name for name in self._roles if name in held)

    def caller(
        self,
        name: str,
        source: Source,
        grants: CallerGrants,
        *,
        models: Iterable[str] | None = None,
    ) -> Caller:
        """`models` (from a token's claim) overrides the grants' own."""
        held = self.known_roles(grants.roles)
        role = self._roles[held[0]] if held else _NO_ROLE
        rate = grants.rate_limit or role.rate_limit or self._default_rate
        budget = grants.budget or role.budget
        return Caller(
            name=name,
            models=frozenset(
                (tuple(models) if models is not None else grants.models) or role.models
            ),
            rate=rate_rule(rate),
            tokens=token_rule(rate),
            max_output_tokens=grants.max_output_tokens or role.max_output_tokens,
            max_concurrent_streams=grants.max_concurrent_streams or role.max_concurrent_streams,
            source=source,
            team=grants.team,
            roles=frozenset(held),
            admin=any(self._roles[r].admin for r in held),
            budget=budget_rule(budget) if budget is not None else None,
        )


#: The grants of a caller that holds no role: none.
_NO_ROLE = RoleSettings(name="(none)")
