"""The spend ledger: budgets held to, and spend kept as hourly rollups.

Every call that reaches an upstream is charged to its scopes — its key (`key:<name>`)
and, when it has one, its team (`team:<name>`) — each kept apart: a team's spend never
counts against a member's own budget, nor a member's against another's. For a scope
with a budget the call first *reserves* the most it may cost (from its max_tokens and
the dearest price that may serve it): refused when the period's spend plus what calls in
flight hold plus this reservation would pass the hard limit. When the call ends it
*settles*: the reservation is released and the real cost is added, in one step, so the
difference goes back at once. Spend is kept per scope and period (UTC day, week from
Monday, calendar month) for the budgets, and per scope, model and hour (calls, tokens
by kind, cost) for the history GetUsage shows: a rollup, never a record per call.

This module holds what every ledger shares and the in-process one (`MemoryLedger`:
exact for one process, forgotten when it stops); `redis_ledger` holds the one every
process and replica shares.
"""

from __future__ import annotations

import calendar
import itertools
import operator
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ai_service.config import BudgetSettings
from ai_service.limits.prices import nanos_of

PeriodKind = Literal["day", "week", "month"]
KINDS: tuple[PeriodKind, ...] = ("day", "week", "month")
DAY_SECONDS = 86_400

#: What a rollup counts, in this order.
FIELDS = (
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost",
    "estimated_calls",
    "unpriced_calls",
)
COST = FIELDS.index("cost")
ESTIMATED = FIELDS.index("estimated_calls")
UNPRICED = FIELDS.index("unpriced_calls")


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """A scope's budget, in nano-units of the currency (see limits.prices)."""

    period: PeriodKind
    #: The hard limit; None: none (only `soft`).
    hard: int | None
    #: The soft limit (logged and counted, never refused); None: none.
    soft: int | None


def budget_rule(settings: BudgetSettings) -> BudgetRule:
    def nanos(value: float | None) -> int | None:
        return None if value is None else nanos_of(value)

    return BudgetRule(settings.period, nanos(settings.amount), nanos(settings.soft))


@dataclass(frozen=True, slots=True)
class Scope:
    """What spend is kept for: `key:<name>` or `team:<name>`, and its budget."""

    name: str
    budget: BudgetRule | None


@dataclass(frozen=True, slots=True)
class Period:
    """One day, week or month: its key in the ledger, and its bounds (Unix seconds)."""

    kind: PeriodKind
    key: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Periods:
    """The periods that hold at one time, and its hour."""

    day: Period
    week: Period
    month: Period
    #: Hours since the epoch.
    hour: int

    def of(self, kind: PeriodKind) -> Period:
        return self.day if kind == "day" else self.week if kind == "week" else self.month

    @property
    def all(self) -> tuple[Period, Period, Period]:
        return self.day, self.week, self.month


def periods_at(now: float) -> Periods:
    """The UTC day, week (from Monday) and calendar month of `now`."""
    day = int(now // DAY_SECONDS)
    start = day * DAY_SECONDS
    date = time.gmtime(start)
    week_start = start - date.tm_wday * DAY_SECONDS
    week_key = "w" + day_name(week_start // DAY_SECONDS)
    month_start = start - (date.tm_mday - 1) * DAY_SECONDS
    days_in_month = calendar.monthrange(date.tm_year, date.tm_mon)[1]
    return Periods(
        day=Period("day", "d" + day_name(day), start, start + DAY_SECONDS),
        week=Period("week", week_key, week_start, week_start + 7 * DAY_SECONDS),
        month=Period(
            "month",
            f"m{date.tm_year:04d}-{date.tm_mon:02d}",
            month_start,
            month_start + days_in_month * DAY_SECONDS,
        ),
        hour=int(now // 3600),
    )


def day_name(day: int) -> str:
    """Days since the epoch as `YYYY-MM-DD`."""
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY_SECONDS))


class Calendar:
    """`periods_at`, worked out once an hour rather than on every call."""

    __slots__ = ("_clock", "_periods", "_until")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._until = -1.0
        self._periods: Periods | None = None

    def now(self) -> Periods:
        now = self._clock()
        periods = self._periods
        if periods is None or now >= self._until or now < self._until - 3600:
            periods = self._periods = periods_at(now)
            self._until = (periods.hour + 1) * 3600.0
        return periods


@dataclass(slots=True)
class Spend:
    """What one call spent, for its model's rollup: one count per `FIELDS`."""

    model: str
    counts: tuple[int, ...]

    @property
    def cost(self) -> int:
        return self.counts[COST]


@dataclass(frozen=True, slots=True)
class Tally:
    """A rollup read back: one model's counts over one hour (or a longer span)."""

    hour: int
    model: str
    counts: tuple[int, ...]


@dataclass(slots=True)
class Refusal:
    """Why a reservation was refused: the scope, its spend in the period and what calls
    in flight held, in nano-units."""

    scope: Scope
    period: Period
    spent: int
    reserved: int


@dataclass(slots=True)
class Hold:
    """A reservation taken: `amount` nano-units held in each of `scopes`."""

    id: str
    amount: int
    scopes: tuple[str, ...]


@dataclass(slots=True)
class Admission:
    """What a reservation gave: a hold (None when refused, or when the shared store was
    down and the policy let the call through), the scopes over their soft limit, and
    which of those this is the first call over in the period (to log once)."""

    hold: Hold | None
    refused: Refusal | None = None
    over_soft: tuple[Scope, ...] = ()
    first_over_soft: tuple[Scope, ...] = ()


@dataclass(slots=True)
class Balance:
    """A scope's spend in a period and what calls in flight hold, in nano-units."""

    spent: int
    reserved: int


class Ledger(Protocol):
    async def reserve(
        self, budgeted: Sequence[Scope], amount: int, hold_seconds: float
    ) -> Admission:
        """Hold `amount` in every scope of `budgeted` (all have a budget), or refuse."""
        ...

    async def settle(self, hold: Hold | None, scopes: Sequence[str], spend: Spend) -> None:
        """Release `hold` and add `spend` to every scope of `scopes`, as one step."""
        ...

    async def tallies(self, scope: str, since_hour: int, until_hour: int) -> list[Tally]:
        """`scope`'s rollups of the hours from `since_hour` until (not with) `until_hour`."""
        ...

    async def balance(self, scope: str, period: Period) -> Balance: ...

    def start(self) -> None:
        """Start background work (in the running loop)."""
        ...

    async def aclose(self) -> None:
        """Write out what is not yet written (the process is stopping)."""
        ...


_ids = itertools.count()
#: Hold ids: unique per process, and across processes and restarts (pid and start time).
_ID_PREFIX = f"{os.getpid():x}.{time.time_ns() & 0xFFFFFFFF:x}."


def hold_id() -> str:
    return _ID_PREFIX + str(next(_ids))


def add_counts(into: list[int], counts: Iterable[int]) -> None:
    for i, value in enumerate(counts):
        into[i] += value


_PLACE = {"day": 0, "week": 1, "month": 2}


class MemoryLedger:
    """The ledger in this process: exact here, invisible to other processes, forgotten
    when the process stops (Redis keeps it across processes and restarts)."""

    def __init__(self, retention_days: int, clock: Callable[[], float] = time.time) -> None:
        self._retention_days = retention_days
        self._calendar = Calendar(clock)
        #: The current day, week and month: their keys.
        self._keys: tuple[str, str, str] = ("", "", "")
        #: scope → nano-units spent in the current day, week and month.
        self._spent: dict[str, list[int]] = {}
        #: scope → nano-units held by calls in flight.
        self._reserved: dict[str, int] = {}
        #: (scope, period key) of the soft limits already passed and logged.
        self._alerted: set[tuple[str, str]] = set()
        #: (scope, day) → {(hour, model): counts}.
        self._rollups: dict[tuple[str, int], dict[tuple[int, str], list[int]]] = {}
        self._day = -1

    def _now(self) -> Periods:
        periods = self._calendar.now()
        if periods.day.key != self._keys[0]:
            self._new_day(periods)
        return periods

    async def reserve(
        self, budgeted: Sequence[Scope], amount: int, hold_seconds: float
    ) -> Admission:
        periods = self._now()
        spent: list[int] = []
        for scope in budgeted:
            rule = scope.budget
            assert rule is not None
            totals = self._spent.get(scope.name)
            used = totals[_PLACE[rule.period]] if totals is not None else 0
            held = self._reserved.get(scope.name, 0)
            if rule.hard is not None and used + held + amount > rule.hard:
                return Admission(None, Refusal(scope, periods.of(rule.period), used, held))
            spent.append(used)
        over: tuple[Scope, ...] = ()
        first: tuple[Scope, ...] = ()
        reserved = self._reserved
        for i, scope in enumerate(budgeted):
            reserved[scope.name] = reserved.get(scope.name, 0) + amount
            rule = scope.budget
            assert rule is not None
            if rule.soft is not None and spent[i] >= rule.soft:
                over += (scope,)
                mark = (scope.name, periods.of(rule.period).key)
                if mark not in self._alerted:
                    self._alerted.add(mark)
                    first += (scope,)
        # No id: a hold here is never looked up, only given back by its settlement.
        hold = Hold("", amount, tuple([scope.name for scope in budgeted]))
        return Admission(hold, None, over, first)

    async def settle(self, hold: Hold | None, scopes: Sequence[str], spend: Spend) -> None:
        if hold is not None:
            for name in hold.scopes:
                self._reserved[name] -= hold.amount
        periods = self._now()
        cost = spend.cost
        slot = (periods.hour, spend.model)
        for name in scopes:
            if cost:
                totals = self._spent.get(name)
                if totals is None:
                    self._spent[name] = [cost, cost, cost]
                else:
                    totals[0] += cost
                    totals[1] += cost
                    totals[2] += cost
            hours = self._rollups.get((name, self._day))
            if hours is None:
                hours = self._rollups[(name, self._day)] = {}
            counts = hours.get(slot)
            if counts is None:
                hours[slot] = list(spend.counts)
            else:
                counts[:] = map(operator.add, counts, spend.counts)

    def _new_day(self, periods: Periods) -> None:
        """Start the new day (and week, and month, when they start too); forget the
        rollups past their retention."""
        keys = (periods.day.key, periods.week.key, periods.month.key)
        kept = [old == new for old, new in zip(self._keys, keys, strict=True)]
        for totals in self._spent.values():
            for i, keep in enumerate(kept):
                if not keep:
                    totals[i] = 0
        self._keys = keys
        self._alerted = {mark for mark in self._alerted if mark[1] in keys}
        self._day = int(periods.day.start // DAY_SECONDS)
        oldest = self._day - self._retention_days
        self._rollups = {key: v for key, v in self._rollups.items() if key[1] > oldest}

    async def tallies(self, scope: str, since_hour: int, until_hour: int) -> list[Tally]:
        found = []
        for day in range(since_hour // 24, (until_hour - 1) // 24 + 1):
            for (hour, model), counts in self._rollups.get((scope, day), {}).items():
                if since_hour <= hour < until_hour:
                    found.append(Tally(hour, model, tuple(counts)))
        return found

    async def balance(self, scope: str, period: Period) -> Balance:
        self._now()
        place = _PLACE[period.kind]
        totals = self._spent.get(scope)
        spent = totals[place] if totals is not None and self._keys[place] == period.key else 0
        return Balance(spent, self._reserved.get(scope, 0))

    def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
