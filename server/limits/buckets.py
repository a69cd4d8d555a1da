"""Rate limits (requests and tokens per minute) behind one small interface.

A `RateLimiter` keeps one token bucket per subject: `take` spends from it if it
can, `charge` spends (or, with a negative amount, refunds) unconditionally — how
token budgets reconcile an estimate with the usage the provider reports. The
in-process implementation is exact for one process; the Redis one holds the same
limit across every process and replica, atomically, in one round trip per check
(a Lua script on Redis's own clock).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ai_service.limits.rules import RateRule
from ai_service.limits.shared_state import RedisUnavailable, SharedRedis


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    #: Seconds until the amount would be allowed (0 when allowed).
    retry_after: float = 0.0


ALLOWED = Decision(True)


class RateLimiter(Protocol):
    async def take(self, subject: str, amount: float, rule: RateRule) -> Decision:
        """Spend `amount` from `subject`'s bucket, or say how long to wait."""
        ...

    async def charge(self, subject: str, amount: float, rule: RateRule) -> None:
        """Spend (negative: refund) `amount` whatever the balance."""
        ...


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class InMemoryRateLimiter:
    """Token buckets in this process: exact here, invisible to other processes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._clock = clock  # a test's own clock drives refills without waiting

    def _bucket(self, subject: str, rule: RateRule) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(subject)
        if bucket is None:
            bucket = self._buckets[subject] = _Bucket(float(rule.burst), now)
        else:
            refill = (now - bucket.updated) * rule.per_second
            bucket.tokens = min(float(rule.burst), bucket.tokens + refill)
            bucket.updated = now
        return bucket

    async def take(self, subject: str, amount: float, rule: RateRule) -> Decision:
        bucket = self._bucket(subject, rule)
        if bucket.tokens >= amount:
            bucket.tokens -= amount
            return ALLOWED
        return Decision(False, (amount - bucket.tokens) / rule.per_second)

    async def charge(self, subject: str, amount: float, rule: RateRule) -> None:
        bucket = self._bucket(subject, rule)
        bucket.tokens = min(float(rule.burst), bucket.tokens - amount)


# KEYS[1]: the bucket. ARGV: burst, rate per second, amount, mode ("take" | "charge").
# Redis's TIME is the one clock every replica shares.
_TOKEN_BUCKET = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 1
local wait = 0
if ARGV[4] == 'take' then
  if tokens >= amount then
    tokens = tokens - amount
  else
    allowed = 0
    wait = (amount - tokens) / rate
  end
else
  tokens = math.min(burst, tokens - amount)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - math.min(tokens, 0)) / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RedisRateLimiter:
    """Token buckets in Redis: one limit across every process and replica."""

    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared
        self._script = shared.client.register_script(_TOKEN_BUCKET)

    async def _run(self, subject: str, amount: float, rule: RateRule, mode: str) -> Any:
        key = self._shared.key("limit", subject)
        args = (rule.burst, rule.per_second, amount, mode)
        return await self._shared.run(lambda _: self._script(keys=[key], args=args))

    async def take(self, subject: str, amount: float, rule: RateRule) -> Decision:
        try:
            allowed, wait = await self._run(subject, amount, rule, "take")
        except RedisUnavailable:
            if self._shared.fail_open:
                return ALLOWED
            raise self._shared.refusal() from None
        return ALLOWED if int(allowed) else Decision(False, float(wait))

    async def charge(self, subject: str, amount: float, rule: RateRule) -> None:
        # An unrecorded charge is the lesser harm: the policy applies at the next take.
        with contextlib.suppress(RedisUnavailable):
            await self._run(subject, amount, rule, "charge")


class LeasedRateLimiter:
    """Spends quota locally from leases taken from a shared limiter in small batches.

    Checking Redis on every call cost this gateway ~45% of its throughput (measured:
    bench/RESULTS.md). A lease is `lease_fraction` of a bucket's burst, so a replica
    asks Redis once per lease instead of once per call. A lease is already spent in
    Redis, and it lapses once Redis would have refilled it (lease / rate seconds): a
    lease held through a refill would add to a full bucket. So the limit holds across
    replicas, give or take what refills while a lease is held. The price is precision:
    up to one lease per replica may sit unspent while another replica is refused, and a
    lapsed lease is lost. Small limits get leases of one, the per-call behaviour, exactly.
    """

    def __init__(self, shared: RateLimiter, lease_fraction: float) -> None:
        self._shared = shared
        self._fraction = lease_fraction
        #: subject → (tokens held, monotonic time they lapse at)
        self._leases: dict[str, tuple[float, float]] = {}

    def _lease(self, rule: RateRule) -> float:
        return max(1.0, float(math.floor(rule.burst * self._fraction)))

    def _held(self, subject: str, now: float) -> tuple[float, float]:
        """(tokens held, when they lapse); nothing once lapsed."""
        lease = self._leases.get(subject)
        return lease if lease is not None and now < lease[1] else (0.0, math.inf)

    def _hold(self, subject: str, tokens: float, lapse: float) -> None:
        """Add `tokens`, which lapse at `lapse`, to what is held: all lapse with the oldest."""
        held, held_lapse = self._held(subject, time.monotonic())
        self._leases[subject] = (held + tokens, min(held_lapse, lapse) if held else lapse)

    @staticmethod
    def _lapse(tokens: float, rule: RateRule, now: float) -> float:
        """When Redis will have refilled `tokens` taken from it now."""
        return now + tokens / rule.per_second if rule.per_second > 0 else math.inf

    async def take(self, subject: str, amount: float, rule: RateRule) -> Decision:
        now = time.monotonic()
        held, lapse = self._held(subject, now)
        if held >= amount:
            self._leases[subject] = (held - amount, lapse)  # spending never extends it
            return ALLOWED
        # What is held goes toward this call: set aside before waiting on Redis, so a
        # call taken meanwhile cannot count it too.
        self._leases.pop(subject, None)
        missing = amount - held
        batch = max(self._lease(rule), missing)
        if batch > missing:
            decision = await self._shared.take(subject, batch, rule)
            if decision.allowed:
                self._hold(subject, batch - missing, self._lapse(batch, rule, now))
                return ALLOWED
        # Not a whole lease left globally: take just what this call needs.
        decision = await self._shared.take(subject, missing, rule)
        if not decision.allowed and held and lapse > time.monotonic():
            self._hold(subject, held, lapse)  # not spent after all (unless lapsed since)
        return decision

    async def charge(self, subject: str, amount: float, rule: RateRule) -> None:
        now = time.monotonic()
        held, lapse = self._held(subject, now)
        if amount <= 0:
            # A refund: keep up to one lease here, give the rest back to everyone.
            keep = min(-amount, max(0.0, self._lease(rule) - held))
            if keep:
                self._hold(subject, keep, self._lapse(keep, rule, now))
            if -amount > keep:
                await self._shared.charge(subject, amount + keep, rule)
            return
        if held >= amount:
            self._leases[subject] = (held - amount, lapse)
            return
        self._leases.pop(subject, None)
        await self._shared.charge(subject, amount - held, rule)
