"""gRPC server interceptors, one concern each; `app.py` lists them in call order."""

from __future__ import annotations

from ai_service.identity.callers import Caller, current_caller
from ai_service.interceptors.auth import AuthInterceptor
from ai_service.interceptors.rate_limit import RateLimitInterceptor

__all__ = ["AuthInterceptor", "Caller", "RateLimitInterceptor", "current_caller"]
