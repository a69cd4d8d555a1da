"""A rate limit's rule: how much per minute, and how much at once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateRule:
    """`per_minute` sustained, up to `burst` at once."""

    per_minute: int
    burst: int

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0
