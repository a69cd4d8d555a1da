"""The in-process spend ledger: budgets held to at the boundary, key and team kept apart,
soft limits logged once a period, spend kept as hourly rollups; and the periods."""

from __future__ import annotations

import calendar
import time

import pytest

from ai_service.limits.ledger import (
    FIELDS,
    Balance,
    BudgetRule,
    MemoryLedger,
    Scope,
    Spend,
    periods_at,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def utc(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M")))


def spend(cost: int, model: str = "m", prompt: int = 10, completion: int = 5) -> Spend:
    counts = dict.fromkeys(FIELDS, 0)
    counts.update(calls=1, prompt_tokens=prompt, completion_tokens=completion, cost=cost)
    return Spend(model, tuple(counts[name] for name in FIELDS))


KEY = Scope("key:alice", BudgetRule("month", hard=100, soft=None))


async def test_a_budget_is_refused_at_its_boundary_and_not_before() -> None:
    ledger = MemoryLedger(35, Clock(utc("2026-12-07T10:00")))
    first = await ledger.reserve([KEY], 40, 60)
    second = await ledger.reserve([KEY], 40, 60)
    assert first.hold and second.hold
    refused = await ledger.reserve([KEY], 40, 60)  # 40 + 40 held, 40 more passes 100
    assert refused.hold is None and refused.refused is not None
    assert (refused.refused.scope, refused.refused.spent, refused.refused.reserved) == (KEY, 0, 80)
    # Settled for less than held: the difference is back at once.
    await ledger.settle(first.hold, ["key:alice"], spend(30))
    month = periods_at(utc("2026-12-07T10:00")).month
    assert await ledger.balance("key:alice", month) == Balance(30, 40)
    exactly = await ledger.reserve([KEY], 30, 60)  # 30 spent + 40 held + 30 = 100: allowed
    assert exactly.hold is not None
    assert (await ledger.reserve([KEY], 1, 60)).refused is not None


async def test_team_spend_never_counts_against_a_members_own_budget_nor_the_other_way() -> None:
    ledger = MemoryLedger(35, Clock(utc("2026-12-07T10:00")))
    team = Scope("team:search", BudgetRule("day", hard=1000, soft=None))
    alice = Scope("key:alice", BudgetRule("day", hard=100, soft=None))
    bob = Scope("key:bob", BudgetRule("day", hard=100, soft=None))
    # Bob spends 90 through the team: the team has 910 left, Alice still her whole 100.
    hold = (await ledger.reserve([bob, team], 90, 60)).hold
    await ledger.settle(hold, ["key:bob", "team:search"], spend(90))
    assert (await ledger.reserve([alice, team], 100, 60)).hold is not None
    refused = await ledger.reserve([bob, team], 11, 60)
    assert refused.refused is not None and refused.refused.scope == bob
    # A key without a budget of its own is held to its team's alone.
    carol = Scope("key:carol", None)
    big = await ledger.reserve([team], 810, 60)
    assert big.hold is not None
    refused = await ledger.reserve([team], 1, 60)
    assert refused.refused is not None and refused.refused.scope == team  # the team's
    await ledger.settle(big.hold, [carol.name, "team:search"], spend(800))
    day = periods_at(utc("2026-12-07T10:00")).day
    assert (await ledger.balance("key:alice", day)).spent == 0
    assert (await ledger.balance("key:carol", day)).spent == 800
    assert (await ledger.balance("team:search", day)).spent == 890


async def test_a_soft_budget_is_passed_once_a_period_and_every_call_over_it_counts() -> None:
    clock = Clock(utc("2026-12-07T10:00"))
    ledger = MemoryLedger(35, clock)
    soft = Scope("key:alice", BudgetRule("day", hard=None, soft=50))
    hold = (await ledger.reserve([soft], 60, 60)).hold
    await ledger.settle(hold, [soft.name], spend(60))
    over = [await ledger.reserve([soft], 60, 60) for _ in range(3)]
    assert all(a.hold is not None and a.over_soft == (soft,) for a in over)  # served
    assert [a.first_over_soft for a in over] == [(soft,), (), ()]  # logged once
    clock.now = utc("2026-12-08T00:00")  # the next day starts afresh
    fresh = await ledger.reserve([soft], 60, 60)
    assert fresh.over_soft == ()


async def test_spend_is_kept_by_scope_model_and_hour_and_forgotten_after_its_retention() -> None:
    clock = Clock(utc("2026-12-07T10:15"))
    ledger = MemoryLedger(2, clock)
    await ledger.settle(None, ["key:a", "team:t"], spend(7, "m1"))
    await ledger.settle(None, ["key:a"], spend(5, "m1"))
    await ledger.settle(None, ["key:a"], spend(3, "m2"))
    clock.now = utc("2026-12-07T11:05")
    await ledger.settle(None, ["key:a"], spend(1, "m1"))
    hour = int(utc("2026-12-07T10:00") // 3600)
    tallies = await ledger.tallies("key:a", hour, hour + 2)
    cost = FIELDS.index("cost")
    assert sorted((t.hour - hour, t.model, t.counts[0], t.counts[cost]) for t in tallies) == [
        (0, "m1", 2, 12),
        (0, "m2", 1, 3),
        (1, "m1", 1, 1),
    ]
    assert [t.counts[cost] for t in await ledger.tallies("team:t", hour, hour + 2)] == [7]
    assert await ledger.tallies("key:a", hour + 1, hour + 2) != []
    clock.now = utc("2026-12-10T00:00")  # three days on: past a retention of two
    await ledger.settle(None, ["key:b"], spend(1))
    assert await ledger.tallies("key:a", hour, hour + 2) == []


@pytest.mark.parametrize(
    ("moment", "day", "week", "month", "month_end"),
    [
        ("2026-12-07T10:00", "d2026-12-07", "w2026-12-07", "m2026-12", "2027-01-01T00:00"),
        ("2026-12-06T23:59", "d2026-12-06", "w2026-11-30", "m2026-12", "2027-01-01T00:00"),
        ("2028-02-29T12:00", "d2028-02-29", "w2028-02-28", "m2028-02", "2028-03-01T00:00"),
        ("2027-01-01T00:00", "d2027-01-01", "w2026-12-28", "m2027-01", "2027-02-01T00:00"),
    ],
)
def test_periods_are_utc_days_weeks_from_monday_and_calendar_months(
    moment: str, day: str, week: str, month: str, month_end: str
) -> None:
    periods = periods_at(utc(moment))
    assert (periods.day.key, periods.week.key, periods.month.key) == (day, week, month)
    assert periods.month.end == utc(month_end)
    assert periods.week.end - periods.week.start == 7 * 86400
    assert periods.day.start <= utc(moment) < periods.day.end
