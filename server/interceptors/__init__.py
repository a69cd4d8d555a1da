"""gRPC server interceptors, one concern each; `app.py` lists them in call order."""

from __future__ import annotations

from server.interceptors.auth import AuthInterceptor, Caller, current_caller
from server.interceptors.rate_limit import RateLimitInterceptor

__all__ = ["AuthInterceptor", "Caller", "RateLimitInterceptor", "current_caller"]
