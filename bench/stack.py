"""The things under test, started on free loopback ports: simulator, gateway, echo server.

Each starter is a context manager that yields an `Endpoint` and stops the process (and
everything it forked) when the block ends, whatever happens inside.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ai_service_protos import ai_service_pb2 as pb
from bench.h2load import GRPC_HEADERS, Load, grpc_frame
from bench.procs import LOOPBACK, PYTHON, free_port, running, wait_listeners

BENCH_KEY = "bench-key-0123456789abcdef"
MODEL = "sim-gpt"
UPSTREAM_MODEL = "sim-gpt-1"
UNARY_METHOD = "/ai_service.v1.AIService/ChatCompletion"
STREAM_METHOD = "/ai_service.v1.AIService/StreamChatCompletion"
#: The unary prompt on both sides: a 16-word deterministic answer.
UNARY_PROMPT = "/tokens 16 benchmark"


@dataclass(frozen=True)
class Endpoint:
    name: str
    port: int
    pid: int
    #: The gateway's HTTP door (OpenAI- and Anthropic-compatible APIs); 0: none.
    http_port: int = 0

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def http(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@contextlib.contextmanager
def simulator(
    workdir: Path,
    *,
    latency_ms: float = 0.0,
    tokens_per_second: float = 0.0,
    name: str = "simulator",
) -> Iterator[Endpoint]:
    port = free_port()
    argv = [PYTHON, "-m", "ai_service.simulator", "--listen", f"{LOOPBACK}:{port}"]
    argv += ["--latency-ms", f"{latency_ms:g}", "--tokens-per-second", f"{tokens_per_second:g}"]
    with running(argv, port=port, log=workdir / f"{name}.log") as proc:
        yield Endpoint("simulator", port, proc.pid)


def gateway_tree(
    simulator_url: str,
    *,
    auth: bool = True,
    rate_limit: bool = True,
    http_client: str = "h1",
    max_connections: int = 100,
    max_in_flight: int | None = None,
    metrics: bool = False,
    tracing: str | None = None,
    redaction: bool = False,
    audit: Path | None = None,
    cache: bool = False,
    http_door: bool = False,
) -> dict[str, Any]:
    """A gateway config: one model on the simulator, each hot-path feature on or off.

    Everything optional is off unless asked, metrics included (the gateway's default is
    on): the base measures the bare hot path, and each feature adds its own cost to it.
    """
    server: dict[str, Any] = {"listen": f"{LOOPBACK}:0", "shutdown_grace_seconds": 1}
    if http_door:  # its port is picked when the gateway starts (`gateway`)
        server["http"] = {"listen": f"{LOOPBACK}:0"}
    return {
        "server": server,
        "auth": {"enabled": auth, "keys": [{"name": "bench", "key": BENCH_KEY}] if auth else []},
        # On, but far above any rate reached here: the limiter's cost without its refusals.
        "rate_limit": {"requests_per_minute": 1_000_000_000 if rate_limit else 0},
        "providers": [
            {
                "name": "simulator",
                "kind": "openai",
                "base_url": f"{simulator_url}/v1",
                "http_client": http_client,
                "timeouts": {"connect": 30, "read": 600, "pool": 60},
                "pool": {
                    "max_connections": max_connections,
                    "max_keepalive_connections": max_connections,
                },
            }
        ],
        "models": [{"name": MODEL, "provider": "simulator", "upstream_model": UPSTREAM_MODEL}],
        # Calls in flight per deployment (default 256, then a queue): held streams count.
        "resilience": _concurrency(max_in_flight),
        "observability": {
            # The port is picked when the gateway starts (`gateway`), one free port each.
            "metrics": {"enabled": metrics},
            "tracing": _tracing(tracing),
            "audit": {"path": str(audit) if audit else None},
        },
        # Built-in detectors (the default list), `redact` on the model: prompts scanned.
        "redaction": {"mode": "off", "models": {MODEL: "redact"} if redaction else {}},
        # `deterministic`: a request without temperature 0 or a seed is not cached.
        "cache": {"enabled": cache, "when": "deterministic"},
    }


def _concurrency(max_in_flight: int | None) -> dict[str, Any]:
    if max_in_flight is None:
        return {}
    return {"concurrency": {"max_in_flight": max_in_flight, "max_queue": max_in_flight}}


def _tracing(server_spans: str | None) -> dict[str, Any]:
    """Tracing on with nothing sampled, the exporter aimed at a closed port.

    What this costs is the instrumentation itself: no span is exported (none is sampled),
    and if one were, it would go nowhere. `server_spans` says who makes the server spans.
    """
    if server_spans is None:
        return {"exporter": "none"}
    closed = f"http://{LOOPBACK}:{free_port()}/v1/traces"
    return {
        "exporter": "otlp",
        "sample_ratio": 0.0,
        "otlp_endpoint": closed,
        "server_spans": server_spans,
    }


def _with_ports(tree: dict[str, Any], port: int, http_port: int) -> dict[str, Any]:
    """`tree` listening on `port` (its HTTP door, if any, on `http_port`), and on a free
    port of its own for /metrics if enabled."""
    observability = dict(tree.get("observability", {}))
    metrics = dict(observability.get("metrics", {}))
    if metrics.get("enabled", True):
        metrics["listen"] = f"{LOOPBACK}:{free_port()}"
    observability["metrics"] = metrics
    server = {**tree["server"], "listen": f"{LOOPBACK}:{port}"}
    if "http" in server:
        server["http"] = {**server["http"], "listen": f"{LOOPBACK}:{http_port}"}
    return {**tree, "server": server, "observability": observability}


@contextlib.contextmanager
def gateway(
    workdir: Path,
    tree: dict[str, Any],
    name: str = "gateway",
    workers: int = 1,
    env: dict[str, str] | None = None,
    log_level: str = "warning",
) -> Iterator[Endpoint]:
    """A gateway process; `log_level` info keeps its access log (a line per call) on."""
    port = free_port()
    http_port = free_port() if "http" in tree["server"] else 0
    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump(_with_ports(tree, port, http_port)), encoding="utf-8")
    argv = [PYTHON, "-m", "ai_service", "--config", str(config), "--log-level", log_level]
    argv += ["--workers", str(workers)]
    with running(argv, port=port, log=workdir / f"{name}.log", env=env) as proc:
        # The port answers as soon as one worker listens: wait for all of them.
        wait_listeners(port, workers, proc, timeout=30.0)
        if http_port:
            wait_listeners(http_port, workers, proc, timeout=30.0)
        yield Endpoint(name, port, proc.pid, http_port)


@contextlib.contextmanager
def echo_server(workdir: Path, env: dict[str, str] | None = None) -> Iterator[Endpoint]:
    port = free_port()
    argv = [PYTHON, "-m", "bench.echo", "--listen", f"{LOOPBACK}:{port}"]
    with running(argv, port=port, log=workdir / "echo.log", env=env) as proc:
        yield Endpoint("echo", port, proc.pid)


@contextlib.contextmanager
def forwarder(
    workdir: Path, sim: Endpoint, env: dict[str, str] | None = None
) -> Iterator[Endpoint]:
    port = free_port()
    argv = [
        PYTHON,
        "-m",
        "bench.forwarder",
        "--listen",
        f"{LOOPBACK}:{port}",
        "--upstream",
        sim.http,
    ]
    with running(argv, port=port, log=workdir / "forwarder.log", env=env) as proc:
        yield Endpoint("forwarder", port, proc.pid)


def chat_request(prompt: str = UNARY_PROMPT) -> pb.ChatCompletionRequest:
    return pb.ChatCompletionRequest(model=MODEL, messages=[pb.Message(role="user", content=prompt)])


def openai_body(prompt: str = UNARY_PROMPT, *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": UPSTREAM_MODEL,
        "messages": [{"role": "user", "content": prompt}],
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def grpc_unary_load(
    endpoint: Endpoint,
    workdir: Path,
    *,
    clients: int,
    streams: int,
    duration: float,
    warmup: float,
    rate: float | None = None,
    auth: bool = True,
    deadline: float | None = None,
    stream_tokens: int = 0,
) -> Load:
    """h2load's unary gRPC calls; `deadline` (seconds) is sent as each call's grpc-timeout.
    `stream_tokens`: StreamChatCompletion calls instead, each a stream of that many words."""
    if stream_tokens:
        body = workdir / f"stream-{stream_tokens}.grpc"
        request = chat_request(f"/tokens {stream_tokens} benchmark")
        method = STREAM_METHOD
    else:
        body, request, method = workdir / "unary.grpc", chat_request(), UNARY_METHOD
    body.write_bytes(grpc_frame(request.SerializeToString()))
    headers = GRPC_HEADERS + ((f"authorization: Bearer {BENCH_KEY}",) if auth else ())
    if deadline is not None:
        headers += (f"grpc-timeout: {round(deadline * 1000)}m",)
    return Load(
        url=f"{endpoint.http}{method}",
        body=body,
        headers=headers,
        clients=clients,
        streams_per_client=streams,
        duration=duration,
        warmup=warmup,
        rate=rate,
    )


def http_door_load(
    endpoint: Endpoint,
    workdir: Path,
    *,
    concurrency: int,
    duration: float = 0,
    warmup: float = 0,
    calls: int | None = None,
    auth: bool = True,
) -> Load:
    """h2load --h1 against the gateway's HTTP door: the same prompt as the gRPC load, as
    the OpenAI SDK sends it, one request per connection at a time."""
    body = workdir / "unary-door.json"
    body.write_text(
        json.dumps({"model": MODEL, "messages": [{"role": "user", "content": UNARY_PROMPT}]}),
        encoding="utf-8",
    )
    headers: tuple[str, ...] = ("content-type: application/json",)
    if auth:
        headers += (f"authorization: Bearer {BENCH_KEY}",)
    return Load(
        url=f"http://{LOOPBACK}:{endpoint.http_port}/v1/chat/completions",
        body=body,
        headers=headers,
        clients=concurrency,
        streams_per_client=1,
        duration=duration,
        warmup=warmup,
        h1=True,
        calls=calls,
    )


def upstream_requests(sim: Endpoint) -> int:
    """How many model requests the simulator has received (its control API)."""
    with urllib.request.urlopen(f"{sim.http}/_sim/stats?recent=0", timeout=10) as response:
        stats: dict[str, Any] = json.load(response)
    return int(stats["total_requests"])
