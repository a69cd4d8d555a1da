"""Token budgets: reserve an estimate before the call, settle with the real usage after.

The estimate is the prompt's characters / 4 plus the most the call may generate
(its max_tokens, or the model's default). It is taken from the caller's
tokens-per-minute bucket before any upstream call (refused: RESOURCE_EXHAUSTED
with RetryInfo); once the provider reports usage the difference is charged or
refunded. A call that failed is refunded whole, unless it was cut short (cancelled,
out of time) after its request went upstream: that one pays its prompt. A stream
cut short is settled from what it delivered. A caller that shared another's call
(single flight) is refunded, as a cache hit costs nothing; the flight is paid by
the caller that started it, whether or not it stayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ai_service.config import ModelSettings
from ai_service.errors import RateLimited
from ai_service.limits.buckets import RateLimiter
from ai_service.limits.rules import RateRule
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest

CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Reservation:
    subject: str
    rule: RateRule
    tokens: int
    prompt_estimate: int


def estimate_prompt_tokens(request: ChatCompletionRequest) -> int:
    chars = sum(len(m.content) + len(m.name) for m in request.messages)
    chars += sum(
        len(t.function.parameters_json) + len(t.function.description) for t in request.tools
    )
    return math.ceil(chars / CHARS_PER_TOKEN) + 3 * len(request.messages)


def estimate_chars_as_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


class TokenQuota:
    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def reserve(
        self, key: str, rule: RateRule | None, request: ChatCompletionRequest, model: ModelSettings
    ) -> Reservation | None:
        """Reserve the call's estimated tokens from key `key`'s bucket under `rule`."""
        if rule is None:
            return None
        completion = (
            request.max_tokens
            if request.HasField("max_tokens")
            else model.effective_default_max_tokens
        )
        return await self.reserve_estimate(key, rule, estimate_prompt_tokens(request), completion)

    async def reserve_estimate(
        self, key: str, rule: RateRule | None, prompt: int, completion: int
    ) -> Reservation | None:
        """Reserve `prompt` + `completion` estimated tokens (an Embed call has no completion)."""
        if rule is None:
            return None
        # A call larger than the burst could never pass: reserve what the bucket can
        # hold and let the settlement charge the rest.
        tokens = min(prompt + completion, rule.burst)
        subject = f"tokens:{key}"
        decision = await self._limiter.take(subject, tokens, rule)
        if not decision.allowed:
            raise RateLimited(
                f"token limit of {rule.per_minute} tokens/minute exceeded for key "
                f"{key!r} (this call reserves ~{tokens}); retry after "
                f"{decision.retry_after:.2f}s",
                retry_after=decision.retry_after,
                subject=f"key:{key}",
                quota=f"{rule.per_minute} tokens per minute",
            )
        return Reservation(subject, rule, tokens, prompt)

    async def settle(self, reservation: Reservation | None, used_tokens: int) -> None:
        """Charge or refund the difference between the reservation and what was used."""
        if reservation is None:
            return
        difference = used_tokens - reservation.tokens
        if difference:
            await self._limiter.charge(reservation.subject, difference, reservation.rule)
