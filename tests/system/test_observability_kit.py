"""The operator's kit in deploy/observability, against a real Prometheus.

Prometheus (Debian's package) scrapes a real gateway every second with the kit's own
prometheus.yml and alerts.yaml; the gateway serves a traffic mix that touches every
metric. Then every dashboard query and every alert's expression is evaluated through
Prometheus's query API: each must parse and return series, so the kit names only
series the gateway really exports. promtool checks the rules and the config.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ai_service.config import TracingSettings, parse_config
from ai_service.simulator import Simulator
from bench import kit, kit_traffic
from bench import prometheus as prom
from tests.conftest import PROVIDER_KEY_REF, TEST_ENV, StartGateway, free_port
from tests.servers import redis_server, require

#: Long enough to hold every sample since the traffic began: Grafana's $__rate_interval.
RATE_INTERVAL = "1m"


def promtool(*args: str | Path) -> str:
    result = subprocess.run(
        [require("promtool"), *map(str, args)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_accepts_the_alert_rules() -> None:
    out = promtool("check", "rules", kit.ALERTS)
    assert f"SUCCESS: {len(kit.alerts())} rules found" in out


def test_promtool_accepts_the_scrape_config_as_shipped_and_as_run(tmp_path: Path) -> None:
    promtool("check", "config", kit.KIT / "prometheus.yml")
    config = prom.scrape_config("127.0.0.1:19464")
    promtool("check", "config", prom.write_config(tmp_path, config))


def test_every_alert_has_a_runbook_and_a_threshold() -> None:
    for alert in kit.alerts():
        assert {"summary", "description", "runbook"} <= set(alert.annotations), alert.name
        assert alert.labels.get("severity") in {"warning", "critical"}, alert.name
        assert alert.signal != alert.expr.strip(), f"{alert.name}: no threshold to strip"


def test_the_collector_receives_what_the_gateway_sends_by_default() -> None:
    collector: dict[str, Any] = yaml.safe_load((kit.KIT / "otel-collector.yaml").read_text())
    gateway = urlsplit(TracingSettings().otlp_endpoint)
    assert gateway.path == "/v1/traces"  # the receiver's path for OTLP/HTTP traces
    receiver = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert receiver == gateway.netloc
    pipeline = collector["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    assert "batch" in pipeline["processors"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(collector[kind]), kind


async def test_every_panel_and_alert_query_returns_series(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    binary = require("prometheus")
    with redis_server(free_port(), tmp_path) as redis:
        tree = kit_traffic.gateway_tree(
            simulator.base_url, api_key=PROVIDER_KEY_REF, redis_url=redis.url
        )
        gateway = await start_gateway(parse_config(tree, env=TEST_ENV))
        kit_traffic.break_upstream(simulator)
        metrics = gateway.observability.metrics_server
        assert metrics is not None and metrics.port
        config = prom.scrape_config(f"127.0.0.1:{metrics.port}")
        async with prom.running(binary, tmp_path / "prometheus", config) as prometheus:
            await prometheus.wait_for(f'up{{job="{prom.JOB}"}} == 1', "the gateway scraped")
            # A scrape after each round: the second round's calls raise counters that
            # Prometheus has already seen, so rates are above zero.
            seen: Counter[str] = Counter()
            for _ in range(2):
                seen += await kit_traffic.one_round(gateway.address, simulator)
                await prometheus.scraped_after(time.time())
            expected = {"OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "NOT_FOUND", "UNAUTHENTICATED"}
            assert expected <= set(seen), seen
            await prometheus.scraped_after(time.time())

            values = await variable_values(prometheus)
            assert values["model"] == kit.multi_value(sorted(kit_traffic.MODELS))
            problems = []
            for query in kit.queries():
                expr = kit.substitute(query.expr, values)
                assert "$" not in expr, f"{query.panel}: unsubstituted variable in {expr}"
                problems += await check(prometheus, f"{query.panel} ({query.legend})", expr)
            for alert in kit.alerts():
                problems += await check(prometheus, alert.name, alert.signal)
            assert not problems, "\n".join(problems)

            rules = await evaluated_rules(prometheus)
            assert {r["name"] for r in rules} == {a.name for a in kit.alerts()}
            assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["lastError"]]
            # The model whose upstream always fails is caught (pending: `for` has not passed).
            await wait_pending(prometheus, "AIGatewayHighErrorRatio", model=kit_traffic.BROKEN)


async def check(prometheus: prom.Prometheus, what: str, expr: str) -> list[str]:
    """What is wrong with `expr`: nothing, or that it does not parse or returns nothing."""
    try:
        if await prometheus.query(expr):
            return []
        problem = "returns no series"
    except prom.PrometheusError as error:
        problem = str(error)
    return [f"{what}: {problem}\n    {expr}"]


async def variable_values(prometheus: prom.Prometheus) -> dict[str, str]:
    """Each template variable set to every value it offers, as Grafana sends a
    multi-value selection; `$__rate_interval` to RATE_INTERVAL."""
    values = {"__rate_interval": RATE_INTERVAL}
    for variable in kit.variables():
        offered = await prometheus.label_values(
            variable.label, kit.substitute(variable.match, values)
        )
        assert offered, f"variable {variable.name} offers no value"
        values[variable.name] = kit.multi_value(offered)
    return values


async def evaluated_rules(prometheus: prom.Prometheus) -> list[dict[str, Any]]:
    """The rules once Prometheus has evaluated each of them (every second here)."""
    deadline = time.monotonic() + 30
    while True:
        rules = await prometheus.rules()
        if all(r["health"] != "unknown" for r in rules) or time.monotonic() > deadline:
            return rules
        await asyncio.sleep(0.2)


async def wait_pending(prometheus: prom.Prometheus, name: str, **labels: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        rule = next(r for r in await prometheus.rules() if r["name"] == name)
        states = [a["state"] for a in rule["alerts"] if labels.items() <= a["labels"].items()]
        if states:
            assert states == ["pending"], states
            return
        assert time.monotonic() < deadline, f"{name} never became pending for {labels}"
        await asyncio.sleep(0.2)
