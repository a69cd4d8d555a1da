"""Every call priced and every budget held, on a real gateway in front of the simulator:
the cost in the answer, the last chunk, the trailers, the audit record and the metrics;
streams cut short charged for what they delivered; budgets refused at their boundary
naming the key or the team; soft budgets logged once; GetUsage for oneself and for an
admin, and refused to anyone else."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from ai_service.config import PriceSettings, parse_config
from ai_service.limits.prices import NANOS, Rate
from ai_service.limits.token_quota import estimate_prompt_tokens
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator, plan_reply
from ai_service_client import (
    AIServiceError,
    AsyncAIClient,
    BadRequestError,
    ChatCompletionRequest,
    EmbedRequest,
    Message,
    PermissionDeniedError,
    RateLimitError,
    cli,
)
from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import GetUsageRequest, GetUsageResponse, Usage
from tests.conftest import RESTRICTED_KEY, TEST_ENV, TEST_KEY, StartGateway, config_tree
from tests.integration.test_certificates import audit_records
from tests.integration.test_observability import scrape, value

ADMIN_KEY = "admin-key-0123456789"
#: sim-gpt's prices: a token of each kind at a round number of nano-units.
GPT = PriceSettings(input=2, cached_input=1, output=8)
#: 1000 per million: a token costs 0.001, a budget of 1 holds 1000 tokens.
THOUSAND = PriceSettings(input=1000, output=1000)


def ask(text: str = "hello", model: str = "sim-gpt", **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model=model, messages=[Message(role="user", content=text)], **fields
    )


def tree(simulator: Simulator) -> dict[str, Any]:
    config = config_tree(simulator.base_url)
    config["models"].append(
        {
            "name": "sim-embed",
            "provider": "simulator",
            "upstream_model": "sim-embed-1",
            "capabilities": {"embeddings": True},
        }
    )
    config["auth"]["keys"].append({"name": "root", "key": ADMIN_KEY, "roles": ["admins"]})
    config["auth"]["roles"] = [{"name": "admins", "admin": True}]
    config["cost"] = {
        "currency": "EUR",
        "prices": {
            "sim-gpt": GPT.model_dump(exclude_none=True),
            "sim-embed": {"input": 0.02, "output": 0},
        },
    }
    return config


async def start(start_gateway: StartGateway, config: dict[str, Any]) -> Gateway:
    return await start_gateway(parse_config(config, env=TEST_ENV))


@asynccontextmanager
async def usage_stub(gateway: Gateway) -> AsyncIterator[ai_service_pb2_grpc.AIServiceStub]:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        yield ai_service_pb2_grpc.AIServiceStub(channel)


async def usage_of(client: AsyncAIClient, **request: str) -> GetUsageResponse:
    return await client.get_usage(GetUsageRequest(**request))


async def settled(client: AsyncAIClient, calls: int, **request: str) -> GetUsageResponse:
    """The usage once `calls` calls are in it (a stream cut short settles as it unwinds)."""
    for _ in range(400):
        report = await usage_of(client, **request)
        if report.total.calls >= calls:
            return report
        await asyncio.sleep(0.025)
    raise AssertionError(f"fewer than {calls} calls settled: {report}")


# --- the cost of every call ---------------------------------------------------------------


async def test_every_call_shows_its_cost_in_the_answer_trailers_audit_and_metrics(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    config = tree(simulator)
    config["observability"] = {"metrics": {"listen": "127.0.0.1:0"}, "audit": {"path": str(audit)}}
    gateway = await start(start_gateway, config)
    rate = Rate.of(GPT)
    metadata = (("authorization", f"Bearer {TEST_KEY}"),)
    async with usage_stub(gateway) as stub:
        call = stub.ChatCompletion(ask("price me"), metadata=metadata)
        response = await call
        unary_trailers = dict(await call.trailing_metadata())
        stream = stub.StreamChatCompletion(ask("/tokens 9"), metadata=metadata)
        chunks = [chunk async for chunk in stream]
        stream_trailers = dict(await stream.trailing_metadata())
        embedded = await stub.Embed(
            EmbedRequest(model="sim-embed", inputs=["one two", "three"]), metadata=metadata
        )
        unpriced = await stub.ChatCompletion(ask(model="sim-other"), metadata=metadata)

    unary = rate.cost(response.usage)
    assert unary > 0 and response.cost.amount == unary / NANOS
    assert (response.cost.currency, response.cost.estimated) == ("EUR", False)
    assert (
        unary_trailers["x-ai-cost"] == f"amount={unary / NANOS:.9f}".rstrip("0") + ",currency=EUR"
    )
    last = chunks[-1]
    streamed = rate.cost(last.usage)
    assert last.cost.amount == streamed / NANOS and last.usage.completion_tokens == 9
    assert not any(chunk.HasField("cost") for chunk in chunks[:-1])  # the last chunk only
    assert stream_trailers["x-ai-cost"].startswith(f"amount={streamed / NANOS:.9f}".rstrip("0"))
    embed_cost = Rate.of(PriceSettings(input=0.02, output=0)).cost(embedded.usage)
    assert embedded.cost.amount == embed_cost / NANOS
    assert (unpriced.cost.unpriced, unpriced.cost.amount) == (True, 0.0)  # not free: unknown

    priced: list[dict[str, Any]] = await audit_records(audit, 4)  # type: ignore[assignment]
    assert [r.get("cost") for r in priced] == [
        unary / NANOS,
        streamed / NANOS,
        embed_cost / NANOS,
        0.0,
    ]
    assert {r["currency"] for r in priced} == {"EUR"} and priced[3]["unpriced"] is True

    m = await scrape(gateway)
    assert value(m, "ai_gateway_cost_total", key="tester", model="sim-gpt") == pytest.approx(
        (unary + streamed) / NANOS
    )
    tokens = "ai_gateway_tokens_total"
    assert value(m, tokens, key="tester", model="sim-gpt", kind="input") == (
        response.usage.prompt_tokens + last.usage.prompt_tokens
    )
    assert value(m, tokens, key="tester", model="sim-gpt", kind="output") == (
        response.usage.completion_tokens + last.usage.completion_tokens
    )
    assert value(m, "ai_gateway_unpriced_calls_total", model="sim-other") == 1


async def test_an_answer_from_the_cache_costs_nothing_and_is_not_counted(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    config = tree(simulator)
    config["cache"] = {"enabled": True}
    gateway = await start(start_gateway, config)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        first = await client.chat(ask("cache me", temperature=0))
        again = await client.chat(ask("cache me", temperature=0))
        report = await settled(client, 1)
    assert first.cost.amount > 0 and not first.cached
    assert again.cached and (again.cost.amount, again.cost.currency) == (0.0, "EUR")
    assert report.total.calls == 1 and report.total.cost == first.cost.amount


@pytest.mark.parametrize("ending", ["cancelled", "interrupted"])
async def test_a_stream_cut_short_after_n_chunks_is_charged_for_those_n_as_an_estimate(
    start_gateway: StartGateway, simulator: Simulator, ending: str
) -> None:
    gateway = await start(start_gateway, tree(simulator))
    request = ask("/tokens 40 cut me short")
    delivered = 5
    pieces = plan_reply({"messages": [{"role": "user", "content": request.messages[0].content}]})
    text = "".join(pieces.pieces()[:delivered])
    # The first event only says who speaks; then one event per piece.
    kind = "hold" if ending == "cancelled" else "cut"
    simulator.add_fault(FaultRule(kind, after_chunks=1 + delivered, times=1))
    received = ""
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        stream = client.stream_chat(request)
        if ending == "cancelled":
            async for chunk in stream:
                received += chunk.choices[0].delta.content
                if received == text:  # all the upstream sent: the caller gives up
                    break
            await stream.aclose()
        else:
            with pytest.raises(AIServiceError) as caught:
                async for chunk in stream:
                    received += chunk.choices[0].delta.content
            assert caught.value.reason == "STREAM_INTERRUPTED"
        report = await settled(client, 1)
    assert received == text
    prompt = estimate_prompt_tokens(request)
    completion = math.ceil(len(text) / 4)
    total = report.total
    assert (total.calls, total.estimated_calls) == (1, 1)
    assert (total.prompt_tokens, total.completion_tokens) == (prompt, completion)
    expected = Rate.of(GPT).cost(Usage(prompt_tokens=prompt, completion_tokens=completion))
    assert total.cost == expected / NANOS


# --- budgets ------------------------------------------------------------------------------


def thousand_per_million(config: dict[str, Any]) -> dict[str, Any]:
    config["cost"]["prices"]["sim-gpt"] = THOUSAND.model_dump(exclude_none=True)
    return config


async def test_a_key_is_refused_at_its_budgets_boundary_naming_it_with_time_to_come_back(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    config = thousand_per_million(tree(simulator))
    config["auth"]["keys"][0]["budget"] = {"amount": 1, "period": "day"}  # 1000 tokens a day
    gateway = await start(start_gateway, config)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        first = await client.chat(ask(max_tokens=10))
        spent = first.usage.total_tokens
        left = 1000 - spent
        prompt = estimate_prompt_tokens(ask())
        # A call whose most is exactly what is left passes ...
        await client.chat(ask(max_tokens=left - prompt))
        report = await usage_of(client)
        assert report.budget.spent == pytest.approx(report.total.cost)
        left_now = round(report.budget.remaining * 1000)
        assert report.budget.reserved == 0 and left_now > prompt
        before = simulator.stats.total_requests
        # ... one token more does not, and costs no upstream call.
        with pytest.raises(RateLimitError) as caught:
            await client.chat(ask(max_tokens=left_now - prompt + 1))
        assert simulator.stats.total_requests == before
        await client.chat(ask(max_tokens=left_now - prompt))  # the boundary itself
    error = caught.value
    assert error.reason == "BUDGET_EXCEEDED"
    assert error.quota_violations == [("key:tester", "1 EUR per day")]
    assert error.retry_after is not None and 0 < error.retry_after <= 86400
    assert "key 'tester' is out of its budget of 1 EUR per day" in error.message


async def test_a_team_over_its_budget_refuses_every_member_and_names_the_team(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    config = thousand_per_million(tree(simulator))
    config["auth"]["keys"][0].update(team="search", budget={"amount": 100})
    config["auth"]["keys"][1].update(team="search")
    config["auth"]["teams"] = [{"name": "search", "budget": {"amount": 0.2, "period": "week"}}]
    gateway = await start(start_gateway, config)
    async with (
        AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as tester,
        AsyncAIClient(gateway.address, RESTRICTED_KEY, timeout=10) as restricted,
    ):
        spent = (await restricted.chat(ask(max_tokens=100))).usage.total_tokens
        with pytest.raises(RateLimitError) as caught:  # 200 tokens: past the team's
            await tester.chat(ask(max_tokens=200 - estimate_prompt_tokens(ask()) - spent + 1))
        mine = await usage_of(tester)
    assert caught.value.quota_violations == [("team:search", "0.2 EUR per week")]
    # The team's spend is not the member's: its own budget is untouched.
    assert mine.total.calls == 0 and mine.budget.spent == 0


async def test_a_soft_budget_is_served_logged_once_and_counted(
    start_gateway: StartGateway, simulator: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    config = tree(simulator)
    config["auth"]["keys"][0]["budget"] = {"soft": 0.000001, "period": "month"}
    config["observability"] = {"metrics": {"listen": "127.0.0.1:0"}}
    gateway = await start(start_gateway, config)
    with caplog.at_level(logging.WARNING, logger="ai_service.pipeline.metering"):
        async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
            for _ in range(4):  # the first passes the soft limit; the next three are over it
                assert (await client.chat(ask())).choices
            report = await usage_of(client)
    alerts = [r for r in caplog.records if r.getMessage() == "spend passed a soft budget"]
    assert len(alerts) == 1 and alerts[0].scope == "key:tester"  # type: ignore[attr-defined]
    m = await scrape(gateway)
    assert value(m, "ai_gateway_budget_soft_exceeded_total", scope="key:tester") == 3
    assert report.budget.soft == 0.000001 and report.budget.amount == 0
    assert report.budget.spent > report.budget.soft


async def test_a_caller_under_a_budget_may_not_use_a_model_without_a_price(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    config = tree(simulator)
    config["auth"]["keys"][0]["budget"] = {"amount": 5}
    gateway = await start(start_gateway, config)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask(model="sim-other"))
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.reason == "MODEL_UNPRICED"
    assert "sim-other (simulator/sim-other-1)" in caught.value.message
    assert simulator.stats.total_requests == 0


# --- GetUsage -----------------------------------------------------------------------------


async def test_get_usage_shows_a_keys_own_spend_and_an_admin_any_keys_or_teams(
    start_gateway: StartGateway, simulator: Simulator
) -> None:
    config = tree(simulator)
    config["auth"]["keys"][0].update(team="search", budget={"amount": 2, "period": "month"})
    config["auth"]["keys"][1].update(team="search")
    config["auth"]["teams"] = [{"name": "search", "budget": {"amount": 10}}]
    gateway = await start(start_gateway, config)
    rate = Rate.of(GPT)
    async with (
        AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as tester,
        AsyncAIClient(gateway.address, RESTRICTED_KEY, timeout=10) as restricted,
        AsyncAIClient(gateway.address, ADMIN_KEY, timeout=10) as admin,
    ):
        answers = [await tester.chat(ask(f"/tokens {n}")) for n in (3, 5)]
        other = await restricted.chat(ask("/tokens 7"))
        mine = await usage_of(tester)
        as_admin = await usage_of(admin, key="tester")
        team = await usage_of(admin, team="search")
        with pytest.raises(PermissionDeniedError) as other_key:
            await usage_of(tester, key="restricted")
        with pytest.raises(PermissionDeniedError) as a_team:
            await usage_of(tester, team="search")
        with pytest.raises(BadRequestError) as both:
            await usage_of(admin, key="tester", team="search")
        assert (await usage_of(tester, key="tester")).total == mine.total  # oneself by name

    cost = sum(rate.cost(a.usage) for a in answers)
    assert mine.scope == "key:tester" and mine.currency == "EUR"
    [row] = mine.rows
    assert (row.model, row.calls, row.cost) == ("sim-gpt", 2, cost / NANOS)
    assert row.completion_tokens == 8
    assert row.prompt_tokens == sum(a.usage.prompt_tokens for a in answers)
    assert mine.total.cost == cost / NANOS
    assert mine.budget.period == "month" and mine.budget.amount == 2
    assert mine.budget.spent == cost / NANOS
    assert mine.budget.remaining == pytest.approx(2 - cost / NANOS)
    assert mine.budget.resets_at.seconds > mine.until.seconds - 3600
    assert as_admin.total == mine.total and as_admin.budget == mine.budget
    assert team.scope == "team:search" and team.total.calls == 3
    assert team.total.cost == (cost + rate.cost(other.usage)) / NANOS
    assert team.budget.amount == 10
    for refused in (other_key.value, a_team.value):
        assert refused.code is grpc.StatusCode.PERMISSION_DENIED
        assert refused.reason == "ADMIN_ROLE_REQUIRED"
    assert both.value.field_violations == [("team", "give a key or a team, not both")]


async def test_an_issued_keys_budget_holds_and_an_admin_sees_it(
    start_gateway: StartGateway, simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = thousand_per_million(tree(simulator))
    config["auth"]["virtual_keys"] = {"enabled": True}
    gateway = await start(start_gateway, config)
    monkeypatch.setenv("AI_SERVICE_ADDR", gateway.address)
    monkeypatch.setenv("AI_SERVICE_KEY", ADMIN_KEY)
    issue = ["keys", "create", "batch", "--budget", "0.05", "--budget-period", "week"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert await asyncio.to_thread(cli.main, issue) == 0
    secret = out.getvalue().strip()
    async with (
        AsyncAIClient(gateway.address, secret, timeout=10) as batch,
        AsyncAIClient(gateway.address, ADMIN_KEY, timeout=10) as admin,
    ):
        await batch.chat(ask(max_tokens=10))  # 0.05 holds 50 tokens
        with pytest.raises(RateLimitError) as caught:
            await batch.chat(ask(max_tokens=40))
        seen = await usage_of(admin, key="batch")
    assert caught.value.quota_violations == [("key:batch", "0.05 EUR per week")]
    assert (seen.budget.period, seen.budget.amount, seen.total.calls) == ("week", 0.05, 1)
    assert seen.budget.spent == seen.total.cost > 0
