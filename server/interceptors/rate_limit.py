"""Request-rate limiting per caller, after authentication.

Over the limit, a call is refused with RESOURCE_EXHAUSTED carrying RetryInfo
(when to come back) and QuotaFailure (which quota), before it is deserialised.
"""

from __future__ import annotations

import grpc

from ai_service.errors import GatewayError, RateLimited
from ai_service.identity.callers import Caller, current_caller
from ai_service.interceptors.auth import Continuation
from ai_service.interceptors.rejection import Handler, is_guarded, rejecting_handler
from ai_service.limits.buckets import RateLimiter


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        method = handler_call_details.method
        if not is_guarded(method):
            return await continuation(handler_call_details)
        caller = current_caller.get()
        if caller.rate is not None:
            try:
                decision = await self._limiter.take(f"requests:{caller.name}", 1, caller.rate)
            except GatewayError as error:  # the shared store is down and policy says closed
                return rejecting_handler(method, error)
            if not decision.allowed:
                return rejecting_handler(method, self._refusal(caller, decision.retry_after))
        return await continuation(handler_call_details)

    @staticmethod
    def _refusal(caller: Caller, retry_after: float) -> RateLimited:
        assert caller.rate is not None
        return RateLimited(
            f"rate limit of {caller.rate.per_minute} requests/minute exceeded for key "
            f"{caller.name!r}; retry after {retry_after:.2f}s",
            retry_after=retry_after,
            subject=f"key:{caller.name}",
            quota=f"{caller.rate.per_minute} requests per minute",
        )
