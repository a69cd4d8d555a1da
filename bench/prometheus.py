"""A real Prometheus on a loopback port, scraping a gateway with the kit's own config.

The config is deploy/observability/prometheus.yml with its scrape target pointed at the
gateway under test, its intervals shortened (a test or a preview cannot wait 15 s per
sample) and its alert rules loaded from the kit's alerts.yaml. The HTTP API is used
asynchronously: the gateway under test may serve /metrics from the same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.kit import KIT
from bench.procs import LOOPBACK, free_port, spawn, stop

#: The kit's scrape job for the gateway; alerts and panels that need a job name use it.
JOB = "ai-gateway"


class PrometheusError(Exception):
    """The query API answered with an error (a query that does not parse, say)."""


def scrape_config(target: str, interval: str = "1s") -> dict[str, Any]:
    """The kit's prometheus.yml, scraping `target` every `interval`, without Alertmanager.

    `rule_files` stays relative: write the result beside a copy of alerts.yaml.
    """
    config: dict[str, Any] = yaml.safe_load((KIT / "prometheus.yml").read_text("utf-8"))
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    # Nothing listens for alerts here: sending them would only log connection errors.
    config.pop("alerting", None)
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == JOB]
    assert len(jobs) == 1, f"prometheus.yml has no single {JOB!r} scrape job"
    jobs[0]["static_configs"] = [{"targets": [target]}]
    jobs[0].pop("scrape_interval", None)
    return config


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    """The config and a copy of the kit's rule files, side by side in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for rules in config.get("rule_files", []):
        shutil.copy(KIT / rules, directory / rules)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
    return path


class Prometheus:
    """The query API of a running Prometheus."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._session = session

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        async with self._session.get(f"{self.url}{path}", params=params) as response:
            body = await response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant vector (or a scalar, as one series without labels)."""
        data = await self._get("/api/v1/query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    async def query_range(
        self, expr: str, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        data = await self._get("/api/v1/query_range", params)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = await self._get(f"/api/v1/label/{label}/values", {"match[]": match})
        return values

    async def rules(self) -> list[dict[str, Any]]:
        data = await self._get("/api/v1/rules", {})
        return [rule for group in data["groups"] for rule in group["rules"]]

    async def scraped_after(self, moment: float, scrapes: int = 1) -> None:
        """Until the gateway has been scraped `scrapes` times since `moment` (Unix time):
        one scrape sees every call made before it; a rate needs a second one."""
        for _ in range(scrapes):
            found = await self.wait_for(
                f'timestamp(up{{job="{JOB}"}}) > {moment:.3f}', "a scrape of the gateway"
            )
            moment = max(float(series["value"][1]) for series in found)

    async def wait_for(self, expr: str, what: str, seconds: float = 60.0) -> list[dict[str, Any]]:
        """Poll `expr` until it returns a series (Prometheus scrapes on its own clock)."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    series = await self.query(expr)
                    if series:
                        return series
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise TimeoutError(f"{what}: {expr} returned nothing for {seconds:.0f}s") from None


@contextlib.asynccontextmanager
async def running(
    binary: str, directory: Path, config: dict[str, Any]
) -> AsyncIterator[Prometheus]:
    """Prometheus on a free loopback port, its storage in `directory`, stopped afterwards."""
    path = write_config(directory, config)
    port = free_port()
    process = spawn(
        [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
        ],
        log=directory / "prometheus.log",
        cwd=directory,
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            url = f"http://{LOOPBACK}:{port}"
            await _ready(url, session, process.poll, directory / "prometheus.log")
            yield Prometheus(url, session)
    finally:
        stop(process)


async def _ready(
    url: str, session: aiohttp.ClientSession, exited: Callable[[], int | None], log: Path
) -> None:
    try:
        async with asyncio.timeout(30):
            while exited() is None:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/-/ready") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
    except TimeoutError:
        pass
    output = await asyncio.to_thread(log.read_text)
    raise RuntimeError(f"prometheus did not become ready:\n{output}")
