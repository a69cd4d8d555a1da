"""Failed authentications per client address, on a small token bucket each.

Each call that fails authentication spends a token of its address's bucket
(`auth.failed_attempts_per_minute`, `auth.failed_attempts_burst`); once the bucket is
empty, the address's failing calls are answered RESOURCE_EXHAUSTED (AUTH_THROTTLED)
with RetryInfo saying when to come back. A call with a valid key always passes: behind
a proxy every caller shares its address, and one client's bad key must not lock the
others out; guessing a key of 16 or more random characters is hopeless at any rate a
network carries (see config/callers.py).

Memory stays bounded whoever knocks: an IPv6 address counts by its /64 (one host can
hold a whole /64), at most `MAX_ADDRESSES` addresses are told apart at a time (past
that, new ones share one bucket), and every refill period the buckets start afresh (an
address untouched for that long has a full bucket anyway; one that keeps failing may
so get one burst more per period).
"""

from __future__ import annotations

import ipaddress
import time

from ai_service.config import AuthSettings
from ai_service.errors import AuthThrottled, Unauthenticated
from ai_service.limits.buckets import InMemoryRateLimiter
from ai_service.limits.rules import RateRule

#: Addresses told apart within one refill period; later ones share `_OTHERS`.
MAX_ADDRESSES = 10_000
_OTHERS = "failed-auth:others"


def failed_auth_rule(settings: AuthSettings) -> RateRule | None:
    if settings.failed_attempts_per_minute == 0:
        return None
    return RateRule(
        per_minute=settings.failed_attempts_per_minute, burst=settings.failed_attempts_burst
    )


def client_address(peer: str) -> str:
    """The part of a gRPC peer (`ipv4:10.0.0.1:5000`, `ipv6:[::1]:5000`) that names the
    client: the IPv4 address, the IPv6 /64, or the whole peer for anything else."""
    kind, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0].strip("[]")
    try:
        if kind == "ipv4":
            return str(ipaddress.IPv4Address(host))
        if kind == "ipv6":
            return str(ipaddress.IPv6Network(f"{host}/64", strict=False))
    except ValueError:
        pass
    return peer


class FailedAuthThrottle:
    def __init__(self, rule: RateRule | None) -> None:
        #: Replaced by a reload; the buckets stay.
        self.rule = rule
        self._limiter = InMemoryRateLimiter()
        self._addresses: set[str] = set()
        self._renewed = time.monotonic()

    async def judge(self, peer: str, error: Unauthenticated) -> Unauthenticated | AuthThrottled:
        """`error` for a failed call from `peer`, or AuthThrottled once its bucket is empty."""
        rule = self.rule
        if rule is None:
            return error
        self._renew(rule)
        address = client_address(peer)
        if address not in self._addresses:
            if len(self._addresses) >= MAX_ADDRESSES:
                address = _OTHERS
            else:
                self._addresses.add(address)
        decision = await self._limiter.take(f"failed-auth:{address}", 1, rule)
        if decision.allowed:
            return error
        return AuthThrottled(
            f"too many failed authentications from this address ({rule.per_minute} per "
            f"minute allowed); {error.message}; retry after {decision.retry_after:.2f}s",
            retry_after=decision.retry_after,
            subject=f"client:{address}",
            quota=f"{rule.per_minute} failed authentications per minute",
        )

    def _renew(self, rule: RateRule) -> None:
        now = time.monotonic()
        if now - self._renewed >= rule.burst / rule.per_second:
            self._limiter = InMemoryRateLimiter()
            self._addresses.clear()
            self._renewed = now
