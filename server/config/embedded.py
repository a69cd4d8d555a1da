"""The embedded default: what the gateway runs with no config file."""

from __future__ import annotations

from ai_service.config.callers import DEMO_KEY
from ai_service.config.gateway import GatewayConfig
from ai_service.config.http_door import EMBEDDED_HTTP_LISTEN
from ai_service.config.loading import parse_config


def embedded_default(
    simulator_base_url: str,
    listen: str = "127.0.0.1:50051",
    http_listen: str = EMBEDDED_HTTP_LISTEN,
) -> GatewayConfig:
    """What `python -m ai_service` runs with no config: the built-in simulator and the demo
    key, gRPC on `listen` and the HTTP door (OpenAI and Anthropic APIs) on `http_listen`."""
    return parse_config(
        {
            "server": {"listen": listen, "http": {"listen": http_listen}},
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
                {
                    "name": "simulator-azure",
                    "kind": "azure_openai",
                    "base_url": simulator_base_url,
                },
                {"name": "simulator-gemini", "kind": "gemini", "base_url": simulator_base_url},
                {
                    "name": "simulator-bedrock",
                    "kind": "bedrock",
                    "base_url": simulator_base_url,
                    # Bedrock calls are always signed: with demo keys, which the simulator
                    # takes (it checks credentials only when given a key of its own).
                    "bedrock": {
                        "region": "us-east-1",
                        "access_key_id": "${AI_SERVICE_SIMULATOR_AWS_KEY_ID:-AKIDSIMULATOR}",
                        "secret_access_key": "${AI_SERVICE_SIMULATOR_AWS_SECRET:-simulator}",
                    },
                },
            ],
            # Capabilities: each model takes what its provider's API carries, except
            # sim-llama, text-only (it refuses an image by name), and the two embedding
            # models, which answer Embed.
            "models": [
                {
                    "name": "sim-gpt",
                    "provider": "simulator",
                    "upstream_model": "sim-gpt-1",
                    "capabilities": {"context_window": 128000},
                },
                {
                    "name": "sim-claude",
                    "provider": "simulator-anthropic",
                    "upstream_model": "sim-claude-1",
                    "capabilities": {"context_window": 200000},
                },
                {
                    "name": "sim-llama",
                    "provider": "simulator-ollama",
                    "upstream_model": "sim-llama-1",
                    "capabilities": {
                        "vision": False,
                        "reasoning": False,
                        "context_window": 131072,
                    },
                },
                {
                    "name": "sim-llava",
                    "provider": "simulator-ollama",
                    "upstream_model": "sim-llava-1",
                    "capabilities": {"context_window": 32768},
                },
                {
                    "name": "sim-embed",
                    "provider": "simulator",
                    "upstream_model": "sim-embed-1",
                    "capabilities": {"embeddings": True, "context_window": 8192},
                },
                {
                    "name": "sim-minilm",
                    "provider": "simulator-ollama",
                    "upstream_model": "sim-minilm-1",
                    "capabilities": {"embeddings": True, "context_window": 512},
                },
                {
                    "name": "sim-azure",
                    "provider": "simulator-azure",
                    "upstream_model": "sim-azure-1",
                },
                {
                    "name": "sim-gemini",
                    "provider": "simulator-gemini",
                    "upstream_model": "sim-gemini-1",
                },
                {
                    "name": "sim-bedrock",
                    "provider": "simulator-bedrock",
                    # A Claude model id (with Bedrock's `:`), so reasoning goes as thinking.
                    "upstream_model": "anthropic.sim-claude-v1:0",
                },
            ],
            # Example prices (per million tokens), so every call shows a cost: shaped
            # like real price lists (cached reads cheaper, cache writes dearer), but
            # no provider's.
            "cost": {
                "currency": "USD",
                "prices": {
                    "sim-gpt": {"input": 0.15, "cached_input": 0.075, "output": 0.6},
                    "sim-claude": {
                        "input": 3,
                        "cached_input": 0.3,
                        "cache_write": 3.75,
                        "output": 15,
                    },
                    "sim-llama": {"input": 0.1, "output": 0.1},
                    "sim-llava": {"input": 0.2, "output": 0.2},
                    "sim-embed": {"input": 0.02, "output": 0},
                    "sim-minilm": {"input": 0.01, "output": 0},
                    "sim-azure": {"input": 0.15, "cached_input": 0.075, "output": 0.6},
                    "sim-gemini": {"input": 0.3, "cached_input": 0.03, "output": 2.5},
                    "sim-bedrock": {
                        "input": 3,
                        "cached_input": 0.3,
                        "cache_write": 3.75,
                        "output": 15,
                    },
                },
            },
        },
        env={},
    )
