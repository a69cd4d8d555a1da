"""`python -m bench.ledger`: what metering a call's spend costs on the memory backend.

CPU µs per call (`time.process_time` over `--calls` calls, median of `--rounds` rounds),
in-process, of the metering step a unary call takes (`Meter.admit`, `Meter.charge`,
`Meter.settle`) for a caller with no budget (its spend kept in its key's and team's
hourly rollups), with its key's and its team's budgets (a reservation held and settled
in each), and with a tokens-per-minute limit besides; and, for comparison, the token
limit's reserve and settle alone, which is what a call paid before spend was metered.
Writes the `## Cost and budgets` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ai_service.config import CallerKey, GatewayConfig, parse_config
from ai_service.identity.callers import Caller, Grantor
from ai_service.limits.buckets import InMemoryRateLimiter
from ai_service.limits.ledger import MemoryLedger
from ai_service.limits.token_quota import TokenQuota
from ai_service.pipeline.metering import Meter
from ai_service.routing.router import ModelRoute
from ai_service_protos.ai_service_pb2 import Cost, Usage
from bench import report, stack
from bench.__main__ import written_by

BENCH_DIR = Path(__file__).resolve().parent
HEADING = report.COST_HEADING
#: What the simulator reports for the bench's request: its usage, settled every call.
USAGE = Usage(prompt_tokens=24, completion_tokens=16, total_tokens=40, cached_tokens=8)


def _config() -> GatewayConfig:
    tree: dict[str, Any] = stack.gateway_tree("http://127.0.0.1:9")
    budget = {"amount": 1_000_000_000, "period": "month", "soft": 999_999_999}
    tree["auth"] = {
        "keys": [
            {"name": "plain", "key": "bench-plain-0123456789", "team": "free"},
            {"name": "budgeted", "key": "bench-budget-0123456789", "team": "paid"},
            {"name": "limited", "key": "bench-limited-0123456789", "team": "paid"},
        ],
        "teams": [{"name": "paid", "budget": budget}],
    }
    tree["auth"]["keys"][1]["budget"] = budget
    tree["auth"]["keys"][2]["budget"] = budget
    tree["auth"]["keys"][2]["rate_limit"] = {
        "requests_per_minute": 0,
        "tokens_per_minute": 1_000_000_000,
    }
    tree["cost"] = {"prices": {stack.MODEL: {"input": 2.5, "cached_input": 1.25, "output": 10}}}
    return parse_config(tree, env={})


def _caller(config: GatewayConfig, name: str) -> Caller:
    grantor = Grantor(config.auth.roles, config.rate_limit)
    key: CallerKey = next(k for k in config.auth.keys if k.name == name)
    return grantor.caller(key.name, "config_key", key)


async def _cpu_us(call: Callable[[], Awaitable[object]], calls: int, rounds: int) -> float:
    for _ in range(max(calls // 10, 1)):
        await call()
    results = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            await call()
        results.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(results)


async def measure(calls: int, rounds: int) -> list[tuple[str, float]]:
    config = _config()
    quota = TokenQuota(InMemoryRateLimiter())
    meter = Meter(quota, MemoryLedger(config.cost.retention_days), config)
    model = config.models[0]
    route = ModelRoute(model=model, deployments=(), fingerprint="", fallbacks=())
    deployment = f"{model.targets[0].provider}/{model.targets[0].upstream_model}"
    request = stack.chat_request()
    plain, budgeted, limited = (_caller(config, n) for n in ("plain", "budgeted", "limited"))

    def metered(caller: Caller) -> Callable[[], Awaitable[object]]:
        async def call() -> None:
            ticket = await meter.admit_chat(caller, route, request, 60.0)
            charge = meter.charge(ticket, USAGE, deployment, shown=Cost())
            await meter.settle(ticket, charge)

        return call

    async def tokens_alone() -> None:
        reservation = await quota.reserve(limited.name, limited.tokens, request, model)
        await quota.settle(reservation, USAGE.total_tokens)

    async def nothing() -> None:
        reservation = await quota.reserve(plain.name, plain.tokens, request, model)
        await quota.settle(reservation, USAGE.total_tokens)

    cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("before: no token limit, nothing metered", nothing),
        ("before: a token limit's reserve and settle", tokens_alone),
        ("no budget: spend kept in the key's and team's rollups", metered(plain)),
        ("key and team budgets: reserve in both, settle, rollups", metered(budgeted)),
        ("key and team budgets and a token limit", metered(limited)),
    ]
    return [(name, await _cpu_us(call, calls, rounds)) for name, call in cases]


def section(rows: list[tuple[str, float]], calls: int) -> list[str]:
    (_, nothing), (_, tokens), (_, plain), _, (_, whole) = rows
    return [
        HEADING,
        "",
        f"{written_by('bench.ledger')}: CPU µs per call of the metering step a unary call "
        f"takes (`Meter.admit`, `charge`, `settle`) on the memory backend, in-process, "
        f"median of rounds of {calls} calls.",
        "",
        "| metering | CPU µs per call |",
        "|---|---:|",
        *(f"| {name} | {us:.1f} |" for name, us in rows),
        "",
        f"The ledger adds {plain - nothing:.1f} µs to a call under no budget (its spend "
        f"kept for GetUsage) and {whole - tokens:.1f} µs to one with a token limit and "
        f"key and team budgets (target: at most ~10 µs). Nothing is written per call: "
        f"spend is added to hourly rollups in memory (with Redis: summed in the process and "
        f"written once a second, and a budgeted call's reservation and settlement are one "
        f"Lua script each).",
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ledger", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    rows = asyncio.run(measure(args.calls, args.rounds))
    for name, us in rows:
        print(f"{us:6.1f} µs  {name}")
    report.replace_section(args.output, HEADING, section(rows, args.calls))
    print(f"wrote the cost section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
