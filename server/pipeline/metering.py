"""Metering: what a call may cost, held before it goes upstream; what it cost, settled after.

One step before the call (`admit`) and one after (`settle`) for both of what a caller
spends: tokens, from its tokens-per-minute limit (limits.token_quota), and money, from
its own budget and its team's (limits.ledger), at the configured prices (limits.prices).
Admission reserves the most the call may cost — its prompt estimate (characters / 4)
and its max_tokens (or the model's default, plus a reasoning budget) at the dearest
price of every deployment that may serve it — and refuses a call that could take a
budget past its hard limit (BUDGET_EXCEEDED, naming the key or the team, with the time
until the period starts again). Settlement charges what the provider reported at the
serving deployment's price; where it reported nothing (a stream cut short, a call
failed after its request went out) it charges an estimate, marked as one: the prompt
estimate, and the characters delivered / 4. A call that shared another's answer, or
failed before its request went out, is refunded whole. Every charged call is kept in
its key's and its team's hourly rollups, budgeted or not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ai_service.calls.record import CallRecord, current_call
from ai_service.config import GatewayConfig
from ai_service.eager import started
from ai_service.errors import BudgetExceeded, DeadlineExceeded, ModelUnpriced, UpstreamTimeout
from ai_service.identity.callers import Caller
from ai_service.limits.ledger import (
    FIELDS,
    BudgetRule,
    Hold,
    Ledger,
    Refusal,
    Scope,
    Spend,
    budget_rule,
)
from ai_service.limits.prices import Pricebook, Rate, amount
from ai_service.limits.token_quota import (
    Reservation,
    TokenQuota,
    estimate_chars_as_tokens,
    estimate_prompt_tokens,
)
from ai_service.providers.content import budget_of
from ai_service.routing.router import ModelRoute
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, Cost, Usage

log = logging.getLogger(__name__)

#: The most callers whose scopes are kept worked out (tokens may name any number).
_MAX_CACHED_CALLERS = 10_000


@dataclass(slots=True)
class Ticket:
    """What a call holds while it runs: its tokens, its money, and what to charge."""

    tokens: Reservation | None
    hold: Hold | None
    #: Every scope the call's spend is kept for (its key, its team).
    scopes: tuple[str, ...]
    route: ModelRoute
    #: The prompt's estimated tokens (None: not worked out yet; see `Meter.prompt`).
    prompt_estimate: int | None
    request: ChatCompletionRequest | None = None


@dataclass(slots=True)
class _Scopes:
    """A caller's scopes, worked out once per caller."""

    caller: Caller
    scopes: tuple[Scope, ...]
    names: tuple[str, ...]
    budgeted: list[Scope]


@dataclass(slots=True)
class Charge:
    """What a call is charged: tokens for its token limit, money for its scopes."""

    tokens: int
    #: None: nothing (refunded whole).
    spend: Spend | None


NOTHING = Charge(0, None)


class Meter:
    """The metering of one configuration's calls (a reload builds another; the ledger
    and the token quota's limiter outlive it)."""

    def __init__(self, quota: TokenQuota, ledger: Ledger, config: GatewayConfig) -> None:
        self._quota = quota
        self._ledger = ledger
        self.prices = Pricebook(config.cost, config.models)
        self.currency = config.cost.currency
        self._teams: Mapping[str, BudgetRule] = {
            team.name: budget_rule(team.budget)
            for team in config.auth.teams
            if team.budget is not None
        }
        #: By the caller object's id (callers are kept by the identity sources, and a
        #: lookup by id costs no hashing of the caller's every field).
        self._scopes: dict[int, _Scopes] = {}
        self._rates: dict[int, tuple[ModelRoute, Rate | None]] = {}

    def scopes(self, caller: Caller) -> tuple[Scope, ...]:
        """The caller's key and team, with their budgets."""
        return self._scopes_of(caller).scopes

    def _scopes_of(self, caller: Caller) -> _Scopes:
        found = self._scopes.get(id(caller))
        if found is None or found.caller is not caller:
            scopes: tuple[Scope, ...] = (Scope(f"key:{caller.name}", caller.budget),)
            if caller.team:
                scopes += (Scope(f"team:{caller.team}", self._teams.get(caller.team)),)
            budgeted = [scope for scope in scopes if scope.budget is not None]
            found = _Scopes(caller, scopes, tuple(s.name for s in scopes), budgeted)
            if len(self._scopes) >= _MAX_CACHED_CALLERS:
                self._scopes.clear()
            self._scopes[id(caller)] = found
        return found

    def team_budget(self, team: str) -> BudgetRule | None:
        return self._teams.get(team)

    async def admit_chat(
        self,
        caller: Caller,
        route: ModelRoute,
        request: ChatCompletionRequest,
        hold_seconds: float,
    ) -> Ticket:
        found = self._scopes_of(caller)
        if not found.budgeted and caller.tokens is None:  # nothing to hold: the estimate waits
            return Ticket(None, None, found.names, route, None, request)
        if request.HasField("max_tokens"):
            completion = request.max_tokens
        else:  # the default the gateway sends, and a reasoning budget beside it
            completion = route.model.effective_default_max_tokens
            if request.HasField("reasoning"):
                completion += budget_of(request.reasoning) or 0
        return await self._admit(
            caller, found, route, estimate_prompt_tokens(request), completion, hold_seconds
        )

    async def admit(
        self, caller: Caller, route: ModelRoute, prompt: int, completion: int, hold_seconds: float
    ) -> Ticket:
        """Hold the most the call may cost in money and tokens, or refuse it."""
        return await self._admit(
            caller, self._scopes_of(caller), route, prompt, completion, hold_seconds
        )

    async def _admit(
        self,
        caller: Caller,
        found: _Scopes,
        route: ModelRoute,
        prompt: int,
        completion: int,
        hold_seconds: float,
    ) -> Ticket:
        hold = None
        if found.budgeted:
            hold = await self._hold(caller, route, found.budgeted, prompt, completion, hold_seconds)
        try:
            tokens = await self._quota.reserve_estimate(
                caller.name, caller.tokens, prompt, completion
            )
        except BaseException:
            if hold is not None:
                await self.settle_shielded(Ticket(None, hold, (), route, prompt), NOTHING)
            raise
        return Ticket(tokens, hold, found.names, route, prompt)

    async def _hold(
        self,
        caller: Caller,
        route: ModelRoute,
        budgeted: list[Scope],
        prompt: int,
        completion: int,
        hold_seconds: float,
    ) -> Hold | None:
        rate = self._dearest(route)
        if rate is None:
            missing = [
                f"{name} ({', '.join(self.prices.unpriced[name])})"
                for name in (route.name, *route.fallbacks)
                if self.prices.unpriced.get(name)
            ]
            raise ModelUnpriced(
                f"{budgeted[0].name} spends under a budget, and a model this call may use "
                f"has no price in cost.prices: {'; '.join(missing)}"
            )
        most = rate.most(prompt, completion)
        admission = await self._ledger.reserve(budgeted, most, hold_seconds)
        call = current_call.get()
        if admission.refused is not None:
            if call is not None:
                call.budget_refused = admission.refused.scope.name
            raise self._refusal(admission.refused, most)
        if admission.over_soft and call is not None:
            call.over_soft = tuple(scope.name for scope in admission.over_soft)
        for scope in admission.first_over_soft:
            rule = scope.budget
            assert rule is not None and rule.soft is not None
            log.warning(
                "spend passed a soft budget",
                extra={
                    "scope": scope.name,
                    "period": rule.period,
                    "soft": f"{_shown(rule.soft)} {self.currency}",
                    "key": caller.name,
                },
            )
        return admission.hold

    def _refusal(self, refused: Refusal, most: int) -> BudgetExceeded:
        rule = refused.scope.budget
        assert rule is not None and rule.hard is not None
        period = refused.period
        currency = self.currency
        kind, _, name = refused.scope.name.partition(":")
        resets = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(period.end))
        return BudgetExceeded(
            f"{kind} {name!r} is out of its budget of {_shown(rule.hard)} {currency} per "
            f"{period.kind}: {_shown(refused.spent)} spent, {_shown(refused.reserved)} held by "
            f"calls in flight, and this call may cost up to {_shown(most)}; the budget "
            f"starts again at {resets}",
            retry_after=max(period.end - time.time(), 0.0),
            subject=refused.scope.name,
            quota=f"{_shown(rule.hard)} {currency} per {period.kind}",
        )

    def charge(
        self,
        ticket: Ticket,
        usage: Usage | None,
        deployment: str | None,
        *,
        completion_chars: int = 0,
        shown: Cost | None = None,
    ) -> Charge:
        """What the call is charged (its provider's `usage` when it reported any, else an
        estimate from `completion_chars`) at `deployment`'s price, recorded on the call
        and shown in `shown` (the answer's cost)."""
        estimated = usage is None or not (usage.total_tokens or usage.prompt_tokens)
        if estimated:
            usage = Usage(
                prompt_tokens=self.prompt(ticket),
                completion_tokens=estimate_chars_as_tokens(completion_chars),
            )
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens
        assert usage is not None
        if deployment is not None:
            rate = self.prices.rate(deployment)
        else:  # where it went is not known: the dearest that may have served it
            rate = self._dearest(ticket.route)
        nanos = rate.cost(usage) if rate is not None else 0
        spend = Spend(
            ticket.route.name,
            (
                1,
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
                usage.cache_write_tokens,
                usage.reasoning_tokens,
                nanos,
                int(estimated),
                int(rate is None),
            ),
        )
        if shown is not None:
            shown.amount = amount(nanos)
            shown.currency = self.currency
            if estimated:
                shown.estimated = True
            if rate is None:
                shown.unpriced = True
        call = current_call.get()
        if call is not None:
            call.charged(spend, self.currency)
        return Charge(usage.total_tokens or usage.prompt_tokens, spend)

    def charge_failure(self, ticket: Ticket, error: BaseException) -> Charge:
        """A call that failed: its prompt, estimated, when it was cut short (cancelled, out
        of time) after its request went upstream, which has read it at least; else nothing."""
        if not isinstance(error, asyncio.CancelledError | DeadlineExceeded | UpstreamTimeout):
            return NOTHING
        call = current_call.get()
        sent = _sent_to(call)
        if sent is None:
            return NOTHING
        return self.charge(ticket, None, sent)

    def _dearest(self, route: ModelRoute) -> Rate | None:
        """The dearest price any deployment `route` may reach charges (its fallbacks'
        too), worked out once per route."""
        found = self._rates.get(id(route))
        if found is None or found[0] is not route:
            if len(self._rates) >= _MAX_CACHED_CALLERS:
                self._rates.clear()
            found = self._rates[id(route)] = (
                route,
                self.prices.dearest((route.name, *route.fallbacks)),
            )
        return found[1]

    @staticmethod
    def prompt(ticket: Ticket) -> int:
        """The ticket's prompt estimate, worked out when first needed."""
        if ticket.prompt_estimate is None:
            assert ticket.request is not None
            ticket.prompt_estimate = estimate_prompt_tokens(ticket.request)
        return ticket.prompt_estimate

    def free(self) -> Cost:
        """The cost an answer from the cache or a shared call shows."""
        return Cost(amount=0.0, currency=self.currency)

    async def settle(self, ticket: Ticket, charge: Charge) -> None:
        """Release what `ticket` holds and charge `charge`, tokens and money."""
        if charge.spend is not None:
            await self._ledger.settle(ticket.hold, ticket.scopes, charge.spend)
        elif ticket.hold is not None:
            await self._ledger.settle(ticket.hold, (), _NO_SPEND)
        await self._quota.settle(ticket.tokens, charge.tokens)

    async def settle_shielded(self, ticket: Ticket, charge: Charge) -> None:
        """`settle`, even when the call is being cancelled: the upstream may have spent
        what it is charged."""
        if ticket.tokens is None and ticket.hold is None and charge.spend is None:
            return
        # In this task up to the settlement's first wait (in memory there is none: no
        # task, no loop pass); from there in a task of its own, shielded.
        settling = started(self.settle(ticket, charge))
        try:
            await asyncio.shield(settling)
        except asyncio.CancelledError:
            # Kept alive until done, and known to a stop (`unwound`): the cancellation
            # goes on. One not cancelled ends before its call or flight, which a stop awaits.
            _settling.add(settling)
            settling.add_done_callback(_settling.discard)
            raise


_NO_SPEND = Spend("", (0,) * len(FIELDS))
_settling: set[asyncio.Future[None]] = set()


async def settled() -> None:
    """Until every settlement a cancellation left running has reached the ledger."""
    if _settling:
        await asyncio.wait(set(_settling))


def _sent_to(call: CallRecord | None) -> str | None:
    """The deployment the call's last request that went upstream went to, or None when
    none went (or there is no call record to tell)."""
    if call is None:
        return None
    for attempt in reversed(call.attempts):
        if attempt.sent:
            return attempt.handle.name
    return None


def _shown(nanos: int) -> str:
    """Nano-units as an amount, without trailing zeros."""
    return f"{amount(nanos):.9f}".rstrip("0").rstrip(".")
