"""A gateway and a traffic mix that give every panel and alert of the operator's kit a
series: answered and streamed calls, cache hits, a retry onto a fallback, a hedge, a
model whose upstream always fails (its retries back off, its circuit opens), a key over
its rate limit, a key asking for a model it may not use, an unknown model and a caller
without a valid key.

Used by tests/test_observability_kit.py and by `python -m bench.dashboard_preview`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

from ai_service.simulator import FaultRule, Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message

TESTER_KEY = "kit-tester-key-0123456789"
RESTRICTED_KEY = "kit-restricted-key-0123456789"
#: Served, with `sim-other` as its fallback.
MODEL = "sim-gpt"
FALLBACK = "sim-other"
#: Its only upstream answers 503 to everything.
BROKEN = "sim-down"
BROKEN_UPSTREAM = "sim-down-1"
#: Two deployments, the second asked (all but) only to hedge the first when it is slow.
HEDGED = "sim-hedged"
HEDGED_FIRST = "sim-hedged-1"
MODELS = (MODEL, FALLBACK, BROKEN, HEDGED)
#: One call in a round repeats this prompt: from the second round on it is a cache hit.
CACHED_PROMPT = "/tokens 8 the same question every round"

_unique = itertools.count()


def gateway_tree(
    simulator_url: str,
    *,
    api_key: str | None = None,
    redis_url: str | None = None,
    metrics_listen: str = "127.0.0.1:0",
) -> dict[str, Any]:
    """The gateway config: three models on the simulator, a key with a tight rate limit
    restricted to one model, the response cache for every call, metrics on, and
    (with `redis_url`) limits and cache shared through Redis."""
    provider: dict[str, Any] = {
        "name": "simulator",
        "kind": "openai",
        "base_url": f"{simulator_url}/v1",
    }
    if api_key is not None:
        provider["api_key"] = api_key
    tree: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace_seconds": 5},
        "auth": {
            "keys": [
                # A soft budget its first call passes: the budget panel and alert see it.
                {"name": "tester", "key": TESTER_KEY, "budget": {"soft": 1e-06, "period": "day"}},
                {
                    "name": "restricted",
                    "key": RESTRICTED_KEY,
                    "models": [MODEL],
                    "rate_limit": {"requests_per_minute": 6, "burst": 2},
                },
            ]
        },
        "rate_limit": {"requests_per_minute": 100_000},
        "cache": {"enabled": True, "when": "always"},
        # Quick backoff: the broken model's retries do not slow the rounds down.
        "resilience": {"retries": {"backoff_base_ms": 1, "backoff_max_ms": 5}},
        "providers": [provider],
        "models": [
            {
                "name": MODEL,
                "provider": "simulator",
                "upstream_model": "sim-gpt-1",
                "fallbacks": [FALLBACK],
            },
            {"name": FALLBACK, "provider": "simulator", "upstream_model": "sim-other-1"},
            {"name": BROKEN, "provider": "simulator", "upstream_model": BROKEN_UPSTREAM},
            {
                "name": HEDGED,
                "deployments": [
                    {"provider": "simulator", "upstream_model": HEDGED_FIRST},
                    {"provider": "simulator", "upstream_model": "sim-hedged-2", "weight": 1e-4},
                ],
                "hedge_after_ms": 20,
            },
        ],
        "observability": {"metrics": {"enabled": True, "listen": metrics_listen}},
        # Example prices (no provider's), so the cost panels have series to show.
        "cost": {
            "currency": "USD",
            "prices": {name: {"input": 1, "output": 2} for name in MODELS},
        },
    }
    if redis_url is not None:
        tree["shared_state"] = {"backend": "redis", "redis_url": redis_url}
    return tree


def break_upstream(simulator: Simulator) -> None:
    """The broken model's upstream fails every request from now on."""
    simulator.add_fault(FaultRule("status", model=BROKEN_UPSTREAM, status=503))


def ask(model: str, prompt: str | None = None) -> ChatCompletionRequest:
    text = prompt or f"/tokens {5 + next(_unique) % 20} question {next(_unique)}"
    return ChatCompletionRequest(model=model, messages=[Message(role="user", content=text)])


async def _outcome(call: Any) -> str:
    try:
        await call
    except AIServiceError as error:
        return error.code.name
    return "OK"


async def _stream(client: AsyncAIClient, request: ChatCompletionRequest) -> None:
    async for _ in client.stream_chat(request):
        pass


async def one_round(address: str, simulator: Simulator) -> Counter[str]:
    """One pass through the mix; returns the status codes the callers saw."""
    seen: Counter[str] = Counter()
    # No client-side retries: each call here is one call at the gateway.
    async with (
        AsyncAIClient(address, TESTER_KEY, timeout=10, service_config="") as tester,
        AsyncAIClient(address, RESTRICTED_KEY, timeout=10, service_config="") as restricted,
        AsyncAIClient(address, "not-a-key-of-this-gateway", service_config="") as stranger,
    ):
        calls = [
            tester.chat(ask(MODEL)),
            tester.chat(ask(FALLBACK)),
            tester.chat(ask(MODEL, CACHED_PROMPT)),
            _stream(tester, ask(MODEL)),
            _stream(tester, ask(FALLBACK)),
            tester.chat(ask(BROKEN)),
            tester.chat(ask("no-such-model")),
            stranger.chat(ask(MODEL)),
            restricted.chat(ask(FALLBACK)),
        ]
        for call in calls:
            seen[await _outcome(call)] += 1
        # Over the restricted key's burst: the limiter refuses the rest.
        for _ in range(3):
            seen[await _outcome(restricted.chat(ask(MODEL)))] += 1
        # One upstream 503: the call is retried on its fallback model.
        retried = FaultRule("status", model="sim-gpt-1", status=503, times=1)
        seen[await _meeting(simulator, retried, tester.chat(ask(MODEL)))] += 1
        # Its first deployment is slow this once: the call is hedged on the second.
        slow = FaultRule("latency", model=HEDGED_FIRST, seconds=0.5, times=1)
        seen[await _meeting(simulator, slow, tester.chat(ask(HEDGED)))] += 1
    return seen


async def _meeting(simulator: Simulator, fault: FaultRule, call: Any) -> str:
    """The outcome of `call` with `fault` on its way. A fault it did not meet (the
    deployment's circuit is open, so it was not asked) is withdrawn: left pending, it
    would fail the circuit's next probe, and the circuit would never close."""
    simulator.add_fault(fault)
    try:
        return await _outcome(call)
    finally:
        simulator.discard_fault(fault)
