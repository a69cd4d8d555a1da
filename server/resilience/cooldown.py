"""A deployment's cool-down after an upstream 429: skipped until its Retry-After passes.

The upstream said when to come back; asking it sooner only earns another 429. Every
model that uses the deployment (one handle per provider + upstream model) skips it
meanwhile, for another deployment or a fallback, or refuses the call at once with
the time left.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Cooldown:
    __slots__ = ("_clock", "_until")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = 0.0

    def start(self, seconds: float) -> None:
        """Cool down for `seconds` from now (a longer cool-down already running stays)."""
        self._until = max(self._until, self._clock() + seconds)

    def remaining(self) -> float:
        """Seconds left of the cool-down; 0 when there is none."""
        if not self._until:  # the usual case: no clock read
            return 0.0
        left = self._until - self._clock()
        if left <= 0:
            self._until = 0.0
            return 0.0
        return left
