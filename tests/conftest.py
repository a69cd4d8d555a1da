"""Fixtures that start real things on free loopback ports and tear them down.

`simulator` is the real upstream simulator over HTTP; `start_gateway` starts a
real grpc.aio gateway in this event loop from a config built by `gateway_config`;
`client` is the project's own async client talking to it. Nothing is patched.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_service.config import GatewayConfig, parse_config
from ai_service.limits.buckets import RedisRateLimiter
from ai_service.limits.rules import RateRule
from ai_service.limits.shared_state import SharedRedis
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import Simulator, SimulatorConfig
from ai_service_client import AsyncAIClient

REPO = Path(__file__).resolve().parent.parent
TEST_KEY = "test-key-0123456789"
RESTRICTED_KEY = "restricted-key-0123456789"
PROVIDER_SECRET = "sk-provider-secret-do-not-leak"
# Provider keys only ever come from the environment (or a file), never the config:
# every test config refers to this variable, and child processes inherit it.
PROVIDER_KEY_VARIABLE = "AI_SERVICE_TEST_PROVIDER_KEY"
PROVIDER_KEY_REF = "${" + PROVIDER_KEY_VARIABLE + "}"
os.environ[PROVIDER_KEY_VARIABLE] = PROVIDER_SECRET
TEST_ENV = {PROVIDER_KEY_VARIABLE: PROVIDER_SECRET}


def free_port() -> int:
    """A loopback port free now, for what must know its port before it starts: a config
    file that names it (nginx, Redis, tinyproxy), gateway workers sharing one port, or an
    address nothing listens on. It is released before the child binds it, so another
    process may take it meanwhile: a gateway or simulator process binds port 0 instead and
    reports its port (tests/processes.py)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config_tree(simulator_url: str, **overrides: Any) -> dict[str, Any]:
    """A test configuration: two models on the simulator, an open and a restricted key."""
    tree: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace_seconds": 5},
        "auth": {
            "keys": [
                {"name": "tester", "key": TEST_KEY},
                {"name": "restricted", "key": RESTRICTED_KEY, "models": ["sim-gpt"]},
            ]
        },
        "rate_limit": {"requests_per_minute": 100_000},
        "providers": [
            {
                "name": "simulator",
                "kind": "openai",
                "base_url": f"{simulator_url}/v1",
                "api_key": PROVIDER_KEY_REF,
            }
        ],
        "models": [
            {"name": "sim-gpt", "provider": "simulator", "upstream_model": "sim-gpt-1"},
            {"name": "sim-other", "provider": "simulator", "upstream_model": "sim-other-1"},
        ],
    }
    for path, value in overrides.items():
        node = tree
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(api_key=PROVIDER_SECRET)) as sim:
        yield sim


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(simulator: Simulator) -> AsyncIterator[StartGateway]:
    """Start a gateway on the simulator; keyword overrides use `a__b=value` paths."""
    async with AsyncExitStack() as stack:

        async def start(config: GatewayConfig | None = None, **overrides: Any) -> Gateway:
            cfg = config or parse_config(config_tree(simulator.base_url, **overrides), env=TEST_ENV)
            return await stack.enter_async_context(Gateway(cfg))

        yield start


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[AsyncAIClient]:
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as c:
        yield c


def token_budgeted_keys(tokens_per_minute: int) -> dict[str, Any]:
    """An `auth` section: the test key with a token budget (and no request limit), and
    the restricted key with neither."""
    return {
        "keys": [
            {
                "name": "tester",
                "key": TEST_KEY,
                "rate_limit": {"requests_per_minute": 0, "tokens_per_minute": tokens_per_minute},
            },
            {"name": "restricted", "key": RESTRICTED_KEY},
        ]
    }


def write_config(path: Path, tree: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def single(name: str, upstream: str, **extra: Any) -> dict[str, Any]:
    """A model served by one deployment on the `simulator` provider."""
    return {"name": name, "provider": "simulator", "upstream_model": upstream, **extra}


async def until(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Wait until `condition()` holds, polling every 10 ms; fail naming `what` if it does not
    within `seconds` (a guard against a hang, not a measure of speed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


# --- measuring a rate limit ----------------------------------------------------------------


async def open_bucket(shared: SharedRedis, subject: str, rule: RateRule) -> float:
    """Create `subject`'s bucket in Redis, full; the Redis time it starts to count from."""
    assert (await RedisRateLimiter(shared).take(subject, 0, rule)).allowed
    opened = await shared.client.hget(shared.key("limit", subject), "ts")
    assert opened is not None
    return float(opened)


async def paced(per_second: float, seconds: float, call: Callable[[int], Awaitable[None]]) -> float:
    """Start `call(i)` `per_second` times a second for `seconds`, whatever the answers
    (callers that do not wait for each other), and wait for them all; the wall-clock
    time (Redis's clock on this host) the last one started at."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    calls: list[asyncio.Future[None]] = []
    last = time.time()
    while loop.time() - started < seconds:
        last = time.time()
        calls.append(asyncio.ensure_future(call(len(calls))))
        await asyncio.sleep(max(0.0, started + len(calls) / per_second - loop.time()))
    await asyncio.gather(*calls)
    return last


def assert_within_a_percent(
    admitted: float, rule: RateRule, opened: float, last_call: float, spare: float = 0
) -> None:
    """Never above what the bucket refilled until now; never 1 % below what it refilled
    until the last call started (less `spare`, what no call could use: the tokens
    left under one reservation, and the refunds of the last calls)."""
    most = rule.burst + rule.per_second * (time.time() - opened)
    least = 0.99 * (rule.burst + rule.per_second * (last_call - opened)) - spare
    assert least <= admitted <= most, (least, admitted, most)


#: What examples/config.yaml needs in the environment (its secrets have no defaults).
EXAMPLE_CONFIG_ENV = {
    "OPENAI_API_KEY": "sk-example",
    "ANTHROPIC_API_KEY": "sk-ant-example",
    "AI_SERVICE_OPS_KEY": "4c2b9f0e7a1d38e6b5a9c0d1f2e3a4b5",
    "AZURE_OPENAI_API_KEY": "azure-example-key",
    "AZURE_CLIENT_SECRET": "entra-example-secret",
    "GEMINI_API_KEY": "gemini-example-key",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "aws-example-secret",
}
