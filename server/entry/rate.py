"""A caller's request rate: one request taken from its bucket, or a refusal saying when
to come back (`RateLimited` with the retry delay and the quota)."""

from __future__ import annotations

from ai_service.errors import RateLimited
from ai_service.identity.callers import Caller
from ai_service.limits.buckets import RateLimiter


async def take_request(limiter: RateLimiter, caller: Caller) -> None:
    """Spend one of `caller`'s requests; RateLimited when its bucket is empty, or the
    limiter's GatewayError when the shared store is down and the policy fails closed."""
    rule = caller.rate
    if rule is None:
        return
    decision = await limiter.take(f"requests:{caller.name}", 1, rule)
    if not decision.allowed:
        raise RateLimited(
            f"rate limit of {rule.per_minute} requests/minute exceeded for key "
            f"{caller.name!r}; retry after {decision.retry_after:.2f}s",
            retry_after=decision.retry_after,
            subject=f"key:{caller.name}",
            quota=f"{rule.per_minute} requests per minute",
        )
