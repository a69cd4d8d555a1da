"""Resilience of upstream calls: deadline budget, retries, circuit breakers, concurrency limits.

Each module holds one mechanism as a small object with no I/O of its own;
`server/dispatch.py` combines them around the provider calls.
"""

from __future__ import annotations

from server.resilience.budget import Budget
from server.resilience.circuit import Admission, CircuitBreaker, CircuitState
from server.resilience.concurrency import ConcurrencyLimiter
from server.resilience.retry import RetryBudget, backoff_delay

__all__ = [
    "Admission",
    "Budget",
    "CircuitBreaker",
    "CircuitState",
    "ConcurrencyLimiter",
    "RetryBudget",
    "backoff_delay",
]
