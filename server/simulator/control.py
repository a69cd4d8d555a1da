"""The control API under `/_sim/`, on the same server as the model API.

- `GET /_sim/stats[?recent=N]` — counters, gauges, disconnects, active faults and the last
  N (default 100, at most 1,000) received requests.
- `POST /_sim/faults` — a rule object or a list of them (fields of `FaultRule`), appended.
- `DELETE /_sim/faults` — remove every rule.
- `POST /_sim/reset` — remove every rule and clear the stats.
- `PUT /_sim/config` — `{"latency_ms": …, "tokens_per_second": …}` (either or both).

Control requests are neither counted nor subject to faults or authentication. With
`--workers N` each process has its own state: the control API reaches only the process
that accepted the connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .faults import FaultRule
from .responses import json_response
from .stats import RECENT_REQUESTS

if TYPE_CHECKING:
    from .app import Simulator

PREFIX = "/_sim"
CONFIG_FIELDS = ("latency_ms", "tokens_per_second")
DEFAULT_RECENT = 100


def _bad_request(message: str) -> web.Response:
    return json_response(orjson.dumps({"error": message}), status=400)


async def _json(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as error:
        raise web.HTTPBadRequest(
            text=orjson.dumps({"error": f"not JSON: {error}"}).decode(),
            content_type="application/json",
        ) from error


class ControlApi:
    """The `/_sim/` handlers of one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(f"{PREFIX}/stats", self.get_stats)
        app.router.add_post(f"{PREFIX}/faults", self.add_faults)
        app.router.add_delete(f"{PREFIX}/faults", self.clear_faults)
        app.router.add_post(f"{PREFIX}/reset", self.reset)
        app.router.add_put(f"{PREFIX}/config", self.put_config)

    def _faults_json(self) -> list[dict[str, Any]]:
        return [rule.to_json() for rule in self.sim.faults.rules]

    async def get_stats(self, request: web.Request) -> web.Response:
        try:
            recent = min(int(request.query.get("recent", DEFAULT_RECENT)), RECENT_REQUESTS)
        except ValueError:
            return _bad_request("recent must be an integer")
        snapshot = self.sim.stats.to_json(recent)
        snapshot["faults"] = self._faults_json()
        snapshot["config"] = {name: getattr(self.sim.config, name) for name in CONFIG_FIELDS}
        return json_response(orjson.dumps(snapshot))

    async def add_faults(self, request: web.Request) -> web.Response:
        data = await _json(request)
        items = data if isinstance(data, list) else [data]
        if not all(isinstance(item, dict) for item in items):
            return _bad_request("each fault rule must be a JSON object")
        try:
            rules = [FaultRule.from_json(item) for item in items]
        except (TypeError, ValueError) as error:
            return _bad_request(str(error))
        for rule in rules:
            self.sim.add_fault(rule)
        return json_response(orjson.dumps({"faults": self._faults_json()}))

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.sim.clear_faults()
        return json_response(b'{"faults":[]}')

    async def reset(self, request: web.Request) -> web.Response:
        self.sim.reset()
        return json_response(b'{"reset":true}')

    async def put_config(self, request: web.Request) -> web.Response:
        data = await _json(request)
        if not isinstance(data, dict) or set(data) - set(CONFIG_FIELDS):
            return _bad_request(f"config accepts only {list(CONFIG_FIELDS)}")
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                return _bad_request(f"{name} must be a number >= 0")
        for name, value in data.items():
            setattr(self.sim.config, name, float(value))
        current = {name: getattr(self.sim.config, name) for name in CONFIG_FIELDS}
        return json_response(orjson.dumps(current))
