"""gRPC server interceptors, one concern each: telemetry (the call's request id and record),
authentication, rate limiting; `runtime/gateway.py` lists them in the order a call passes."""

from __future__ import annotations

from ai_service.interceptors.auth import AuthInterceptor
from ai_service.interceptors.rate_limit import RateLimitInterceptor

__all__ = ["AuthInterceptor", "RateLimitInterceptor"]
