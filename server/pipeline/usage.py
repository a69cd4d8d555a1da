"""GetUsage: a key's or a team's spend, tokens and calls by day and model, and its budget.

A caller sees its own; a caller with an admin role may name any key or team — the one
rule the Admin service keeps too (`require_admin`). The rows come from the ledger's
hourly rollups over whole hours of the asked span (by default from the start of the
budget's current period, or of the month), within the history kept
(`cost.retention_days`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from ai_service.config import GatewayConfig
from ai_service.errors import InvalidRequest
from ai_service.identity.callers import Caller, Grantor
from ai_service.identity.virtual_keys import VirtualKeys
from ai_service.limits.ledger import (
    COST,
    DAY_SECONDS,
    FIELDS,
    BudgetRule,
    Ledger,
    Tally,
    add_counts,
    day_name,
    periods_at,
)
from ai_service.limits.prices import amount
from ai_service.pipeline.admin import require_admin
from ai_service.pipeline.metering import Meter
from ai_service_protos.ai_service_pb2 import (
    BudgetStatus,
    GetUsageRequest,
    GetUsageResponse,
    UsageRow,
)

#: The longest name GetUsage takes (a key's or a team's).
MAX_NAME_CHARS = 256


@dataclass(frozen=True, slots=True)
class _Subject:
    scope: str
    budget: BudgetRule | None


class UsageReports:
    """GetUsage for one configuration (a reload builds another)."""

    def __init__(
        self,
        config: GatewayConfig,
        meter: Meter,
        ledger: Ledger,
        virtual: Callable[[], VirtualKeys | None],
    ) -> None:
        self._meter = meter
        self._ledger = ledger
        self._virtual = virtual
        self._retention_days = config.cost.retention_days
        self._grantor = Grantor(config.auth.roles, config.rate_limit)
        grantor = self._grantor
        #: The budgets of the callers the config names (keys, certificates).
        self._budgets: Mapping[str, BudgetRule | None] = {
            **{
                c.name: grantor.caller(c.name, "certificate", c).budget
                for c in config.auth.certificates
            },
            **{k.name: grantor.caller(k.name, "config_key", k).budget for k in config.auth.keys},
        }

    async def report(self, request: GetUsageRequest, caller: Caller) -> GetUsageResponse:
        subject = await self._subject(request, caller)
        now = time.time()
        since, until = self._span(request, subject.budget, now)
        tallies = await self._ledger.tallies(subject.scope, since // 3600, until // 3600)
        response = GetUsageResponse(scope=subject.scope, currency=self._meter.currency)
        response.rows.extend(_rows(tallies))
        total = [0] * len(FIELDS)
        for tally in tallies:
            add_counts(total, tally.counts)
        response.total.CopyFrom(_row("", "", total))
        response.since.FromSeconds(since)
        response.until.FromSeconds(until)
        if subject.budget is not None:
            response.budget.CopyFrom(await self._status(subject, now))
        return response

    async def _subject(self, request: GetUsageRequest, caller: Caller) -> _Subject:
        key, team = request.key.strip(), request.team.strip()
        if key and team:
            raise InvalidRequest("team", "give a key or a team, not both")
        for field, name in (("key", key), ("team", team)):
            if len(name) > MAX_NAME_CHARS:
                raise InvalidRequest(field, f"is {len(name)} characters; at most {MAX_NAME_CHARS}")
        if team:
            require_admin(caller, f"see the usage of team {team!r}")
            return _Subject(f"team:{team}", self._meter.team_budget(team))
        if not key or key == caller.name:
            return _Subject(f"key:{caller.name}", caller.budget)
        require_admin(caller, f"see the usage of key {key!r}")
        return _Subject(f"key:{key}", await self._key_budget(key))

    async def _key_budget(self, name: str) -> BudgetRule | None:
        """The budget of the key named `name`, as far as the gateway knows its grants
        (a token's caller is known only while it calls)."""
        if name in self._budgets:
            return self._budgets[name]
        virtual = self._virtual()
        if virtual is not None:
            for stored in await virtual.all():
                if stored.name == name:
                    return self._grantor.caller(name, "virtual_key", stored.grants).budget
        return None

    def _span(
        self, request: GetUsageRequest, budget: BudgetRule | None, now: float
    ) -> tuple[int, int]:
        """[since, until) in whole hours, within the history kept."""
        if request.HasField("until"):
            until = math.ceil(_seconds(request.until) / 3600) * 3600
        else:
            until = (int(now) // 3600 + 1) * 3600
        if request.HasField("since"):
            since = int(_seconds(request.since)) // 3600 * 3600
        else:
            since = int(periods_at(now).of(budget.period if budget else "month").start)
        if since >= until:
            raise InvalidRequest("since", "must be before until")
        oldest = (int(now) // DAY_SECONDS - self._retention_days) * DAY_SECONDS
        return max(since, oldest), until

    async def _status(self, subject: _Subject, now: float) -> BudgetStatus:
        rule = subject.budget
        assert rule is not None
        period = periods_at(now).of(rule.period)
        balance = await self._ledger.balance(subject.scope, period)
        remaining = 0 if rule.hard is None else max(rule.hard - balance.spent - balance.reserved, 0)
        status = BudgetStatus(
            period=rule.period,
            amount=amount(rule.hard or 0),
            soft=amount(rule.soft or 0),
            spent=amount(balance.spent),
            reserved=amount(balance.reserved),
            remaining=amount(remaining),
        )
        status.resets_at.FromSeconds(int(period.end))
        return status


def _seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def _rows(tallies: list[Tally]) -> list[UsageRow]:
    by_day: dict[tuple[str, str], list[int]] = {}
    for tally in tallies:
        slot = (day_name(tally.hour // 24), tally.model)
        add_counts(by_day.setdefault(slot, [0] * len(FIELDS)), tally.counts)
    return [_row(day, model, counts) for (day, model), counts in sorted(by_day.items())]


def _row(day: str, model: str, counts: list[int]) -> UsageRow:
    counted = {name: value for name, value in zip(FIELDS, counts, strict=True) if name != "cost"}
    return UsageRow(day=day, model=model, cost=amount(counts[COST]), **counted)
