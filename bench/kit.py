"""The operator's kit in deploy/observability, read as data: the dashboard's panels and
template variables, the alert rules, and the substitutions that make their queries
plain PromQL (what Grafana does before it sends a panel's query)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KIT = Path(__file__).resolve().parent.parent / "deploy" / "observability"
DASHBOARD = KIT / "grafana-dashboard.json"
ALERTS = KIT / "alerts.yaml"

#: `label_values(<series selector>, <label>)`, the one kind of variable query the kit uses.
_LABEL_VALUES = re.compile(r"^label_values\((?P<match>.+),\s*(?P<label>\w+)\)$")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}]")
#: An alert's threshold: a comparison with a number at the very end of its expression.
_THRESHOLD = re.compile(r"\s*(?:[<>]=?|==|!=)\s*-?[0-9.]+(?:e-?[0-9]+)?\s*$")


@dataclass(frozen=True)
class Query:
    panel: str
    expr: str
    legend: str


@dataclass(frozen=True)
class Variable:
    name: str
    match: str
    label: str


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    annotations: Mapping[str, str]
    labels: Mapping[str, str]

    @property
    def signal(self) -> str:
        """The expression without its threshold: the series the alert compares."""
        return _THRESHOLD.sub("", self.expr.strip())


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text("utf-8"))
    return loaded


def panels(board: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included; rows themselves are not panels."""
    for panel in (board or dashboard())["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries(board: Mapping[str, Any] | None = None) -> list[Query]:
    return [
        Query(panel["title"], target["expr"], target.get("legendFormat", ""))
        for panel in panels(board)
        for target in panel.get("targets", [])
    ]


def variables(board: Mapping[str, Any] | None = None) -> list[Variable]:
    """The query variables, in dashboard order (a later one may use an earlier one)."""
    found = []
    for variable in (board or dashboard())["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        parsed = _LABEL_VALUES.match(text.strip())
        assert parsed, f"variable {variable['name']}: not a label_values() query: {text}"
        found.append(Variable(variable["name"], parsed["match"], parsed["label"]))
    return found


def multi_value(values: list[str]) -> str:
    """A multi-value variable as Grafana writes it into a Prometheus query: `(a|b)`, each
    value's regex metacharacters escaped with a backslash that is itself escaped for the
    PromQL string (`a.b` → `a\\\\.b`)."""
    return "(" + "|".join(_REGEX_SPECIAL.sub(r"\\\\\g<0>", v) for v in values) + ")"


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """`$name` and `${name}` replaced, longest names first (`$__rate_interval`)."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return expr


def alerts() -> list[Alert]:
    groups = yaml.safe_load(ALERTS.read_text("utf-8"))["groups"]
    return [
        Alert(rule["alert"], rule["expr"], rule.get("annotations", {}), rule.get("labels", {}))
        for group in groups
        for rule in group["rules"]
        if "alert" in rule
    ]
