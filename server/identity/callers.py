"""Who is calling: one `Caller`, whatever identified it, and the context var that carries it.

The interceptors put the caller of a call in `current_caller`; every stage after them
(limits, routing, policy, the servicer) reads it from there, in the same task.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from ai_service.config import RateLimitSettings
from ai_service.limits.rules import RateRule


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the key's configured name, never the key."""

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
