"""The spend ledger in Redis: one set of budgets across every process and replica.

A reservation is one Lua script (atomic, on Redis's clock): for each budgeted scope it
reads the period's spend and what calls in flight hold, refuses if this call's most
could pass the hard limit, else adds the hold. A hold is kept in a sorted set by its
expiry as well as in a running sum, so a replica that dies mid-call cannot hold a budget
forever: holds past their expiry (the call's deadline and a minute) are given back by
the next reservation. Settling a budgeted call is one script too: the hold goes and the
cost lands in the period totals in the same step, so no other replica ever sees the
money in neither place. Across replicas a budget is therefore exact to the nano-unit,
provided a call costs no more than its reservation.

The rest — the spend of scopes without a budget, and every hourly rollup — is history,
not a limit: it is summed in the process and written once a second in one round trip,
so a call under no budget costs Redis nothing. Rollups are hashes per scope and day
(fields `HH|model|field`), kept `retention_days`; period totals until the period ends.
When Redis fails, reservations follow `shared_state.on_failure`; a settlement that
cannot be written joins the next batch (its hold lapses with its expiry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence

from ai_service.limits.ledger import (
    DAY_SECONDS,
    FIELDS,
    Admission,
    Balance,
    Calendar,
    Hold,
    Period,
    Periods,
    Refusal,
    Scope,
    Spend,
    Tally,
    add_counts,
    day_name,
    hold_id,
)
from ai_service.limits.shared_state import RedisUnavailable, SharedRedis

log = logging.getLogger(__name__)

#: How often what the process summed is written to Redis.
FLUSH_SECONDS = 1.0
#: A hold outlives its call's deadline by this much before another reservation takes it back.
HOLD_GRACE_SECONDS = 60.0
#: Period totals are kept this long after their period ends.
TOTALS_GRACE_SECONDS = 2 * DAY_SECONDS
#: A rollup field's one-letter name per `FIELDS`.
_LETTERS = "cpowrtneu"

# KEYS: per budgeted scope, 4 keys: the total of its budget's period, what is reserved,
# the holds (a sorted set by expiry), the soft-limit mark of the period.
# ARGV: amount, the hold ("id:amount"), its lifetime, the lifetime of the reservation
# keys, then per scope: hard limit (-1: none), soft limit (-1: none), end of the period.
# Returns {scope number, spent, reserved} when refused, else {0, one flag per scope:
# 0 under its soft limit, 1 over it, 2 over it for the first time in the period}.
_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local amount = tonumber(ARGV[1])
local n = #KEYS / 4
local spent = {}
for i = 1, n do
  local k = (i - 1) * 4
  local expired = redis.call('ZRANGEBYSCORE', KEYS[k + 3], '-inf', now)
  if #expired > 0 then
    local back = 0
    for _, member in ipairs(expired) do
      back = back + tonumber(string.match(member, ':(%d+)$'))
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now)
    redis.call('DECRBY', KEYS[k + 2], string.format('%d', back))
  end
  local s = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
  local r = tonumber(redis.call('GET', KEYS[k + 2]) or '0')
  local hard = tonumber(ARGV[4 + (i - 1) * 3 + 1])
  if hard >= 0 and s + r + amount > hard then
    return {i, string.format('%d', s), string.format('%d', r)}
  end
  spent[i] = s
end
local flags = {0}
for i = 1, n do
  local k = (i - 1) * 4
  redis.call('INCRBY', KEYS[k + 2], ARGV[1])
  redis.call('ZADD', KEYS[k + 3], now + tonumber(ARGV[3]), ARGV[2])
  -- kept as long as the longest hold in them may live
  for j = 2, 3 do
    if redis.call('TTL', KEYS[k + j]) < tonumber(ARGV[4]) then
      redis.call('EXPIRE', KEYS[k + j], ARGV[4])
    end
  end
  local soft = tonumber(ARGV[4 + (i - 1) * 3 + 2])
  local flag = 0
  if soft >= 0 and spent[i] >= soft then
    flag = 1
    if redis.call('SET', KEYS[k + 4], '1', 'NX') then
      redis.call('EXPIREAT', KEYS[k + 4], ARGV[4 + (i - 1) * 3 + 3])
      flag = 2
    end
  end
  flags[#flags + 1] = flag
end
return flags
"""

# KEYS: per held scope, its reservation sum and its holds; then the period totals to add
# the cost to. ARGV: the hold, its amount, the number of held scopes, the cost, then the
# expiry (Unix seconds) of each total.
_SETTLE = """
local held = tonumber(ARGV[3])
for i = 1, held do
  if redis.call('ZREM', KEYS[i * 2], ARGV[1]) == 1 then
    redis.call('DECRBY', KEYS[i * 2 - 1], ARGV[2])
  end
end
if ARGV[4] ~= '0' then
  for i = held * 2 + 1, #KEYS do
    redis.call('INCRBY', KEYS[i], ARGV[4])
    redis.call('EXPIREAT', KEYS[i], ARGV[5 + i - held * 2 - 1])
  end
end
return 0
"""


class RedisLedger:
    """The ledger in Redis, shared by every process and replica that uses it."""

    def __init__(
        self, shared: SharedRedis, retention_days: int, hold_grace: float = HOLD_GRACE_SECONDS
    ) -> None:
        self._shared = shared
        self._retention = retention_days * DAY_SECONDS
        self._hold_grace = hold_grace
        self._reserve = shared.client.register_script(_RESERVE)
        self._settle = shared.client.register_script(_SETTLE)
        self._calendar = Calendar()
        #: Not yet written: period totals (key → nano-units, expiry) and rollups
        #: (key → field → count, expiry).
        self._totals: dict[str, int] = {}
        self._rollups: dict[str, dict[str, int]] = {}
        self._expiry: dict[str, int] = {}
        self._flusher: asyncio.Task[None] | None = None

    def _key(self, *parts: str) -> str:
        return self._shared.key("ledger", *parts)

    def _total_key(self, scope: str, period: Period) -> str:
        return self._key("spent", scope, period.key)

    async def reserve(
        self, budgeted: Sequence[Scope], amount: int, hold_seconds: float
    ) -> Admission:
        periods = self._calendar.now()
        keys: list[str] = []
        hold = Hold(hold_id(), amount, tuple(scope.name for scope in budgeted))
        lifetime = math.ceil(hold_seconds + self._hold_grace)
        args: list[str | int] = [amount, f"{hold.id}:{amount}", lifetime, lifetime + 1]
        for scope in budgeted:
            rule = scope.budget
            assert rule is not None
            period = periods.of(rule.period)
            keys += [
                self._total_key(scope.name, period),
                self._key("reserved", scope.name),
                self._key("holds", scope.name),
                self._key("soft", scope.name, period.key),
            ]
            args += [
                -1 if rule.hard is None else rule.hard,
                -1 if rule.soft is None else rule.soft,
                int(period.end),
            ]
        try:
            result = await self._shared.run(lambda _: self._reserve(keys=keys, args=args))
        except RedisUnavailable:
            if self._shared.fail_open:
                return Admission(None)  # served unbudgeted until Redis is back
            raise self._shared.refusal() from None
        if int(result[0]):
            scope = budgeted[int(result[0]) - 1]
            assert scope.budget is not None
            return Admission(
                None,
                Refusal(scope, periods.of(scope.budget.period), int(result[1]), int(result[2])),
            )
        flags = [int(flag) for flag in result[1:]]
        over = tuple(scope for scope, flag in zip(budgeted, flags, strict=True) if flag)
        first = tuple(scope for scope, flag in zip(budgeted, flags, strict=True) if flag == 2)
        return Admission(hold, None, over, first)

    async def settle(self, hold: Hold | None, scopes: Sequence[str], spend: Spend) -> None:
        periods = self._calendar.now()
        inline: Sequence[str] = ()
        if hold is not None:
            inline = hold.scopes
            try:
                await self._settle_held(hold, periods, spend.cost)
            except RedisUnavailable:
                inline = ()  # its totals join the batch; the hold lapses by itself
                log.warning(
                    "redis unavailable: a budgeted call's settlement joins the next batch",
                    extra={"scopes": list(hold.scopes)},
                )
        self._add(periods, scopes, inline, spend)

    async def _settle_held(self, hold: Hold, periods: Periods, cost: int) -> None:
        keys: list[str] = []
        for name in hold.scopes:
            keys += [self._key("reserved", name), self._key("holds", name)]
        expiries: list[int] = []
        if cost:
            for name in hold.scopes:
                for period in periods.all:
                    keys.append(self._total_key(name, period))
                    expiries.append(int(period.end + TOTALS_GRACE_SECONDS))
        args: list[str | int] = [
            f"{hold.id}:{hold.amount}",
            hold.amount,
            len(hold.scopes),
            cost,
            *expiries,
        ]
        await self._shared.run(lambda _: self._settle(keys=keys, args=args))

    def _add(
        self, periods: Periods, scopes: Sequence[str], settled: Sequence[str], spend: Spend
    ) -> None:
        """Sum `spend` into the next batch: the period totals of the scopes not `settled`
        already, and every scope's rollup."""
        cost = spend.cost
        day = int(periods.day.start // DAY_SECONDS)
        prefix = f"{periods.hour % 24:02d}|{spend.model}|"
        for name in scopes:
            if cost and name not in settled:
                for period in periods.all:
                    key = self._total_key(name, period)
                    self._totals[key] = self._totals.get(key, 0) + cost
                    self._expiry[key] = int(period.end + TOTALS_GRACE_SECONDS)
            key = self._key("usage", name, day_name(day))
            fields = self._rollups.get(key)
            if fields is None:
                fields = self._rollups[key] = {}
                self._expiry[key] = int(periods.day.end + self._retention)
            for letter, count in zip(_LETTERS, spend.counts, strict=True):
                if count:
                    field = prefix + letter
                    fields[field] = fields.get(field, 0) + count

    async def flush(self) -> None:
        """Write what was summed since the last flush (kept for the next on a failure)."""
        totals, rollups, expiry = self._totals, self._rollups, self._expiry
        if not totals and not rollups:
            return
        self._totals, self._rollups, self._expiry = {}, {}, {}

        async def write(client: object) -> None:
            pipe = self._shared.client.pipeline(transaction=False)
            for key, value in totals.items():
                pipe.incrby(key, value)
                pipe.expireat(key, expiry[key])
            for key, fields in rollups.items():
                for field, value in fields.items():
                    pipe.hincrby(key, field, value)
                pipe.expireat(key, expiry[key])
            await pipe.execute()

        try:
            await self._shared.run(write)
        except RedisUnavailable:
            self._merge_back(totals, rollups, expiry)

    def _merge_back(
        self, totals: dict[str, int], rollups: dict[str, dict[str, int]], expiry: dict[str, int]
    ) -> None:
        for key, value in totals.items():
            self._totals[key] = self._totals.get(key, 0) + value
        for key, fields in rollups.items():
            mine = self._rollups.setdefault(key, {})
            for field, value in fields.items():
                mine[field] = mine.get(field, 0) + value
        for key, when in expiry.items():
            self._expiry.setdefault(key, when)

    async def tallies(self, scope: str, since_hour: int, until_hour: int) -> list[Tally]:
        days = range(since_hour // 24, (until_hour - 1) // 24 + 1)
        keys = [self._key("usage", scope, day_name(day)) for day in days]

        async def read(client: object) -> list[dict[bytes, bytes]]:
            pipe = self._shared.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            return list(await pipe.execute())

        try:
            stored = await self._shared.run(read)
        except RedisUnavailable:
            raise self._shared.refusal() from None
        merged: dict[tuple[int, str], list[int]] = {}
        for day, key, fields in zip(days, keys, stored, strict=True):
            pending = self._rollups.get(key, {})
            items = [(f.decode(), int(v)) for f, v in fields.items()] + list(pending.items())
            for field, value in items:
                hour = day * 24 + int(field[:2])
                if not since_hour <= hour < until_hour:
                    continue
                model, letter = field[3:-2], field[-1]
                counts = merged.setdefault((hour, model), [0] * len(FIELDS))
                add_counts(counts, (value if x == letter else 0 for x in _LETTERS))
        return [Tally(hour, model, tuple(c)) for (hour, model), c in sorted(merged.items())]

    async def balance(self, scope: str, period: Period) -> Balance:
        total = self._total_key(scope, period)
        reserved = self._key("reserved", scope)
        try:
            spent, held = await self._shared.run(lambda client: client.mget([total, reserved]))
        except RedisUnavailable:
            raise self._shared.refusal() from None
        return Balance(int(spent or 0) + self._totals.get(total, 0), int(held or 0))

    def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:  # never let the history stop being written
                log.exception("writing the spend history failed")

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()
