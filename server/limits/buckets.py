"""Rate limits (requests and tokens per minute) behind one small interface.

A `RateLimiter` keeps one token bucket per subject: `take` spends from it if it
can, `charge` spends (or, with a negative amount, refunds) unconditionally — how
token budgets reconcile an estimate with the usage the provider reports. The
in-process implementation is exact for one process; the Redis one holds the same
limit across every process and replica, atomically, in one round trip per check
(a Lua script on Redis's own clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

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

    async def aclose(self) -> None:
        """Hand back what this process holds of the shared buckets (it is stopping)."""
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

    async def aclose(self) -> None:
        pass


# KEYS[1]: the bucket. ARGV: burst, rate per second, least, most, mode ("take" | "charge"),
# floor. `take` spends `most` if that leaves at least `floor` in the bucket, else `least`
# if there is that much, else nothing (and says how long `least` will take); `charge`
# spends `most` (a refund when negative) whatever the balance.
# Returns what was taken, the wait, and how long until the bucket is full by refill alone.
# Redis's TIME is the one clock every replica shares.
_TOKEN_BUCKET = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local least = tonumber(ARGV[3])
local most = tonumber(ARGV[4])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local taken = 0
local wait = 0
if ARGV[5] == 'take' then
  if tokens - most >= tonumber(ARGV[6]) then
    taken = most
  elseif tokens >= least then
    taken = least
  else
    wait = (least - tokens) / rate
  end
  tokens = tokens - taken
else
  tokens = math.min(burst, tokens - most)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - math.min(tokens, 0)) / rate * 1000) + 1000)
return {tostring(taken), tostring(wait), tostring((burst - tokens) / rate)}
"""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a shared bucket gave: `taken` tokens (0: refused, come back in `retry_after`)."""

    taken: float
    retry_after: float = 0.0
    #: Seconds until the bucket is full by refill alone (None: not known).
    full_in: float | None = None


class RedisRateLimiter:
    """Token buckets in Redis: one limit across every process and replica."""

    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared
        self._script = shared.client.register_script(_TOKEN_BUCKET)

    async def _run(
        self, subject: str, rule: RateRule, least: float, most: float, mode: str, floor: float
    ) -> Grant:
        key = self._shared.key("limit", subject)
        args = (rule.burst, rule.per_second, least, most, mode, floor)
        taken, wait, full_in = await self._shared.run(lambda _: self._script(keys=[key], args=args))
        return Grant(float(taken), float(wait), float(full_in))

    async def lease(
        self, subject: str, least: float, most: float, rule: RateRule, floor: float = 0.0
    ) -> Grant:
        """Take `most` if that leaves `floor` in the bucket, else `least` if it can."""
        try:
            return await self._run(subject, rule, least, most, "take", floor)
        except RedisUnavailable:
            if self._shared.fail_open:
                return Grant(least)  # unlimited, and nothing to hold on to
            raise self._shared.refusal() from None

    async def take(self, subject: str, amount: float, rule: RateRule) -> Decision:
        grant = await self.lease(subject, amount, amount, rule)
        return ALLOWED if grant.taken >= amount else Decision(False, grant.retry_after)

    async def charge(self, subject: str, amount: float, rule: RateRule) -> None:
        # An unrecorded charge is the lesser harm: the policy applies at the next take.
        with contextlib.suppress(RedisUnavailable):
            await self._run(subject, rule, amount, amount, "charge", 0.0)

    async def aclose(self) -> None:
        pass  # holds nothing; the connection belongs to SharedRedis


#: A lease is taken only while the bucket keeps this share of its burst after it: near
#: empty, where another replica may be refused, every call asks Redis (exact).
LEASE_FLOOR = 0.1
#: The longest a replica holds tokens nobody spends before it gives them back.
LEASE_HOLD_SECONDS = 1.0


class _Lease:
    __slots__ = ("lapse", "rule", "timer", "tokens")

    def __init__(
        self, tokens: float, rule: RateRule, lapse: float, timer: asyncio.TimerHandle
    ) -> None:
        self.tokens = tokens
        self.rule = rule
        self.lapse = lapse
        self.timer = timer


class LeasedRateLimiter:
    """Spends quota locally from leases taken from Redis in small batches.

    Checking Redis on every call cost this gateway ~45% of its throughput (measured:
    bench/RESULTS.md). A lease is `lease_fraction` of a bucket's burst, taken from Redis
    in the same round trip as the call's own token, so a replica asks Redis once per lease
    instead of once per call. What a lease holds is already spent in Redis; what is left
    of it goes back to Redis (the same refund a settlement makes) once nobody spent it for
    `LEASE_HOLD_SECONDS`, or before Redis would have refilled to its burst, whichever is
    first: given back then, it lands exactly where it would have been had it never left
    (a full bucket drops it, as it drops the refill). Refunds join the replica's lease, up
    to one lease, and go back with it. Leases are only taken while the bucket is well above
    empty (`LEASE_FLOOR`): near the limit, where a token held here would refuse a call
    elsewhere, every call asks Redis. So the limit holds across replicas to the token,
    give or take the refunds another replica gives back while a lease is out.
    """

    def __init__(self, shared: RedisRateLimiter, lease_fraction: float) -> None:
        self._shared = shared
        self._fraction = lease_fraction
        self._leases: dict[str, _Lease] = {}
        #: Leases on their way back to Redis.
        self._returning: set[asyncio.Task[None]] = set()

    def _size(self, rule: RateRule) -> float:
        return max(1.0, float(math.floor(rule.burst * self._fraction)))

    def _hold(self, subject: str, tokens: float, rule: RateRule, full_in: float | None) -> None:
        """Hold `tokens` just taken from Redis, which is full in `full_in` seconds."""
        if full_in is None:  # Redis did not say (it is down): nothing is held
            return
        loop = asyncio.get_running_loop()
        lapse = loop.time() + min(full_in, LEASE_HOLD_SECONDS)
        lease = self._leases.get(subject)
        if lease is None:
            timer = loop.call_at(lapse, self._lapsed, subject)
            self._leases[subject] = _Lease(tokens, rule, lapse, timer)
            return
        lease.tokens += tokens
        if lapse < lease.lapse:  # the earlier estimate of when Redis is full wins
            lease.timer.cancel()
            lease.lapse, lease.timer = lapse, loop.call_at(lapse, self._lapsed, subject)

    def _set_aside(self, subject: str) -> float:
        """Take what `subject`'s lease holds out of it (for a call that needs more)."""
        lease = self._leases.get(subject)
        if lease is None:
            return 0.0
        held, lease.tokens = lease.tokens, 0.0
        return held

    def _put_back(self, subject: str, tokens: float, rule: RateRule) -> None:
        """Tokens set aside but not spent after all: to the lease, or back to Redis."""
        if not tokens:
            return
        lease = self._leases.get(subject)
        if lease is not None:
            lease.tokens += tokens
        else:  # lapsed meanwhile
            self._give_back(subject, tokens, rule)

    def _lapsed(self, subject: str) -> None:
        lease = self._leases.pop(subject, None)
        if lease is not None and lease.tokens > 0:
            self._give_back(subject, lease.tokens, lease.rule)

    def _give_back(self, subject: str, tokens: float, rule: RateRule) -> None:
        task = asyncio.ensure_future(self._shared.charge(subject, -tokens, rule))
        self._returning.add(task)
        task.add_done_callback(self._returning.discard)

    async def take(self, subject: str, amount: float, rule: RateRule) -> Decision:
        lease = self._leases.get(subject)
        if lease is not None and lease.tokens >= amount:
            lease.tokens -= amount
            return ALLOWED
        # What is held goes toward this call: set aside before waiting on Redis, so a
        # call taken meanwhile cannot count it too.
        held = self._set_aside(subject)
        missing = amount - held
        size = self._size(rule)
        try:
            grant = await self._shared.lease(
                subject, missing, max(size, missing), rule, floor=rule.burst * LEASE_FLOOR
            )
        except BaseException:
            self._put_back(subject, held, rule)
            raise
        if grant.taken < missing:
            self._put_back(subject, held, rule)
            return Decision(False, grant.retry_after)
        # Held even when nothing is left over: the lease then keeps the refunds.
        self._hold(subject, grant.taken - missing, rule, grant.full_in)
        return ALLOWED

    async def charge(self, subject: str, amount: float, rule: RateRule) -> None:
        lease = self._leases.get(subject)
        if amount < 0:
            # A refund: kept in the lease up to its size, the rest back to everyone.
            keep = 0.0
            if lease is not None:
                keep = min(-amount, max(0.0, self._size(rule) - lease.tokens))
                lease.tokens += keep
            if -amount > keep:
                await self._shared.charge(subject, amount + keep, rule)
            return
        if lease is not None and lease.tokens >= amount:
            lease.tokens -= amount
            return
        held = self._set_aside(subject)
        await self._shared.charge(subject, amount - held, rule)

    async def aclose(self) -> None:
        """Give every lease back (a replica that stops holds nothing others could use)."""
        for subject in list(self._leases):
            self._leases[subject].timer.cancel()
            self._lapsed(subject)
        await asyncio.gather(*self._returning, return_exceptions=True)
