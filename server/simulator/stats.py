"""What reached the simulator: counters, the recent requests, live connections and streams,
and client disconnects seen mid-stream (tests assert on these)."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

RECENT_REQUESTS = 1_000


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One API request as received. `headers` is case-insensitive (`headers["traceparent"]`);
    `body` is the parsed JSON, or the raw text when it was not JSON."""

    method: str
    path: str
    model: str | None
    headers: Mapping[str, str]
    body: Any
    time: float  # time.time()

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "model": self.model,
            # Header names are `istr`, a str subclass orjson will not take as a key.
            "headers": {str(name): value for name, value in self.headers.items()},
            "body": self.body,
            "time": self.time,
        }


@dataclass(frozen=True, slots=True)
class Disconnect:
    """A client that left before its stream ended. `monotonic` is `time.monotonic()` when the
    simulator saw the connection close (comparable within the process); `time` is wall time."""

    path: str
    model: str | None
    events_sent: int
    monotonic: float
    time: float


def _no_connections() -> int:
    return 0


@dataclass
class SimulatorStats:
    """Counters of one simulator process."""

    requests: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    received: deque[ReceivedRequest] = field(default_factory=lambda: deque(maxlen=RECENT_REQUESTS))
    streams_in_flight: int = 0
    disconnects: list[Disconnect] = field(default_factory=list)
    # Set by the server: how many TCP connections are open right now.
    connection_counter: Callable[[], int] = _no_connections

    @property
    def connections_open(self) -> int:
        return self.connection_counter()

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def count(self, path: str | None = None, model: str | None = None) -> int:
        """Requests received, optionally only those for this path and/or model."""
        return sum(
            n
            for (p, m), n in self.requests.items()
            if (path is None or p == path) and (model is None or m == model)
        )

    def record(
        self, method: str, path: str, model: str | None, headers: Mapping[str, str], body: Any
    ) -> None:
        self.requests[path, model] += 1
        self.received.append(ReceivedRequest(method, path, model, headers, body, time.time()))

    def record_disconnect(self, path: str, model: str | None, events_sent: int) -> None:
        self.disconnects.append(Disconnect(path, model, events_sent, time.monotonic(), time.time()))

    def reset(self) -> None:
        self.requests.clear()
        self.received.clear()
        self.disconnects.clear()

    def to_json(self, recent: int = RECENT_REQUESTS) -> dict[str, Any]:
        return {
            "requests": [
                {"path": path, "model": model, "count": n}
                for (path, model), n in self.requests.items()
            ],
            "total_requests": self.total_requests,
            "connections_open": self.connections_open,
            "streams_in_flight": self.streams_in_flight,
            "disconnects": [
                {
                    "path": d.path,
                    "model": d.model,
                    "events_sent": d.events_sent,
                    "monotonic": d.monotonic,
                    "time": d.time,
                }
                for d in self.disconnects
            ],
            "received": [r.to_json() for r in list(self.received)[-recent:]] if recent else [],
        }
