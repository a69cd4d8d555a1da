"""Fault rules: which request misbehaves, and how.

A rule matches by path and/or model (both optional), fires for the next `times` matching
requests (None = forever) with an optional `probability`, and has one kind:

- `status`: answer `status` with the format's error body; `retry_after` adds the
  `retry-after` (whole seconds, rounded up) and `retry-after-ms` headers, or with
  `retry_after_date` a `retry-after` HTTP date (RFC 9110) that many seconds ahead.
- `reset`: drop the connection (TCP RST) without an answer.
- `stall`: send nothing for `seconds` (None = until the client leaves), then close.
- `cut`: stream `after_chunks` events, then close the connection without `[DONE]`
  (a unary answer is cut after half its body).
- `malformed`: 200 with a body that is not JSON; a stream sends `after_chunks` good events,
  then one broken event, then the rest.
- `latency`: wait `seconds`, then answer normally.
- `stream_error`: a stream sends `after_chunks` good events, then the API's own error
  event for `status` (and `message`) as it reports a failure after the 200 (OpenAI and
  Gemini an `error` object, Anthropic an `error` event, Bedrock an exception frame), and
  ends. Formats without such an event cut the stream there; a unary answer gets `status`.
- `hold`: stream `after_chunks` events, then send nothing more for `seconds` (None =
  until the client leaves), then close (a stream the client gives up on, mid-answer).

At most one rule fires per request: the first, in the order added, that matches and wins
its probability draw. A rule's `times` counts firings, not matches.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

FaultKind = Literal[
    "status", "reset", "stall", "cut", "malformed", "latency", "stream_error", "hold"
]
FAULT_KINDS = frozenset(get_args(FaultKind))


@dataclass
class FaultRule:
    """One fault; see the module docstring for the kinds."""

    kind: FaultKind
    path: str | None = None
    model: str | None = None
    times: int | None = None
    probability: float = 1.0
    status: int = 500
    message: str | None = None
    retry_after: float | None = None
    retry_after_date: bool = False
    seconds: float | None = None
    after_chunks: int = 1

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within 0..1")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or None for forever)")
        if self.after_chunks < 0:
            raise ValueError("after_chunks must be >= 0")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build a rule from the control API's JSON, naming any unknown field."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault field(s): {sorted(unknown)}")
        if "kind" not in data:
            raise ValueError("a fault rule needs a 'kind'")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def matches(self, path: str, model: str | None) -> bool:
        return (self.path is None or self.path == path) and (
            self.model is None or self.model == model
        )


class FaultBook:
    """The active rules, consulted once per API request."""

    def __init__(self, seed: int | None = None) -> None:
        self._rules: list[FaultRule] = []
        self._random = random.Random(seed)
        # A synchronous test may run the simulator's loop in a background thread and add
        # rules from its own thread.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rules)

    @property
    def rules(self) -> list[FaultRule]:
        return list(self._rules)

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def discard(self, rule: FaultRule) -> None:
        """Forget `rule` (this very rule) if it is still active."""
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]

    def take(self, path: str, model: str | None) -> FaultRule | None:
        """The rule that fires for this request, if any, counting it against `times`."""
        if not self._rules:  # the benchmark's hot path: no lock, no loop
            return None
        with self._lock:
            for rule in self._rules:
                if not rule.matches(path, model):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times == 0:
                        self._rules.remove(rule)
                return rule
        return None
