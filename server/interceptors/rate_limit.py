"""Request-rate limiting per caller, after authentication (`entry.rate`, as on the HTTP door).

Over the limit, a call is refused with RESOURCE_EXHAUSTED carrying RetryInfo
(when to come back) and QuotaFailure (which quota), before it is deserialised.
"""

from __future__ import annotations

import grpc

from ai_service.entry.rate import take_request
from ai_service.errors import GatewayError
from ai_service.identity.callers import current_caller
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
                await take_request(self._limiter, caller)
            except GatewayError as error:  # over the limit, or the shared store is down
                return rejecting_handler(method, error)
        return await continuation(handler_call_details)
