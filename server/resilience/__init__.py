"""Resilience of upstream calls: deadline budget, retries, circuit breakers, concurrency limits,
cool-downs after an upstream 429.

Each module holds one mechanism as a small object with no I/O of its own;
`server/pipeline/dispatch.py` combines them around the provider calls.
"""

from __future__ import annotations

from ai_service.resilience.budget import Budget
from ai_service.resilience.circuit import Admission, CircuitBreaker, CircuitState
from ai_service.resilience.concurrency import ConcurrencyLimiter
from ai_service.resilience.cooldown import Cooldown
from ai_service.resilience.retry import RetryBudget, backoff_delay

__all__ = [
    "Admission",
    "Budget",
    "CircuitBreaker",
    "CircuitState",
    "ConcurrencyLimiter",
    "Cooldown",
    "RetryBudget",
    "backoff_delay",
]
