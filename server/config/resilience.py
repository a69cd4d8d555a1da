"""Retries, circuit breakers and per-deployment concurrency."""

from __future__ import annotations

from pydantic import Field

from ai_service.config.base import StrictSettings


class RetrySettings(StrictSettings):
    #: Attempts per call at most, across deployments and fallbacks, the first included.
    max_attempts: int = Field(3, ge=1)
    #: Exponential backoff with full jitter: up to base * 2^retry, capped.
    backoff_base_ms: float = Field(25.0, ge=0)
    backoff_max_ms: float = Field(1000.0, ge=0)
    #: Process-wide: retries may add at most this share of calls (Envoy's retry budget) ...
    budget_ratio: float = Field(0.2, ge=0, le=1)
    #: ... plus this many retries per second, so a quiet gateway can still retry.
    budget_min_per_second: float = Field(5.0, ge=0)


class CircuitBreakerSettings(StrictSettings):
    #: Open after this many failures in a row ...
    consecutive_failures: int = Field(5, ge=1)
    #: ... or when this share of the calls in the window failed ...
    failure_rate: float = Field(0.5, gt=0, le=1)
    #: ... once the window holds at least this many calls.
    min_calls: int = Field(20, ge=1)
    window_seconds: float = Field(30.0, gt=0)
    #: Cool-down before letting probes through (half-open).
    open_seconds: float = Field(15.0, gt=0)
    #: Probe calls allowed at once while half-open; a success closes the circuit.
    half_open_probes: int = Field(1, ge=1)


class ConcurrencySettings(StrictSettings):
    #: Default calls in flight per deployment.
    max_in_flight: int = Field(1000, gt=0)
    #: Default calls waiting for a slot per deployment; beyond: RESOURCE_EXHAUSTED.
    max_queue: int = Field(1024, ge=0)


class ResilienceSettings(StrictSettings):
    retries: RetrySettings = Field(default_factory=RetrySettings)
    circuit_breaker: CircuitBreakerSettings = Field(default_factory=CircuitBreakerSettings)
    concurrency: ConcurrencySettings = Field(default_factory=ConcurrencySettings)
