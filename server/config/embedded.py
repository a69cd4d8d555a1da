"""The embedded default: what the gateway runs with no config file."""

from __future__ import annotations

from ai_service.config.callers import DEMO_KEY
from ai_service.config.gateway import GatewayConfig
from ai_service.config.loading import parse_config


def embedded_default(simulator_base_url: str, listen: str = "127.0.0.1:50051") -> GatewayConfig:
    """What `python -m ai_service` runs with no config: the built-in simulator and the demo key."""
    return parse_config(
        {
            "server": {"listen": listen},
            "auth": {"keys": [{"name": "demo", "key": DEMO_KEY}]},
            # One model per provider kind, all on the built-in simulator, which speaks
            # each wire format at its own path.
            "providers": [
                {"name": "simulator", "kind": "openai", "base_url": f"{simulator_base_url}/v1"},
                {
                    "name": "simulator-anthropic",
                    "kind": "anthropic",
                    "base_url": simulator_base_url,
                },
                {"name": "simulator-ollama", "kind": "ollama", "base_url": simulator_base_url},
            ],
            "models": [
                {"name": "sim-gpt", "provider": "simulator", "upstream_model": "sim-gpt-1"},
                {
                    "name": "sim-claude",
                    "provider": "simulator-anthropic",
                    "upstream_model": "sim-claude-1",
                },
                {
                    "name": "sim-llama",
                    "provider": "simulator-ollama",
                    "upstream_model": "sim-llama-1",
                },
            ],
        },
        env={},
    )
