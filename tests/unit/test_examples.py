"""examples/config.yaml is a config the gateway accepts, and it shows every setting;
examples/openai.yaml is the short one. Neither gives a secret a default."""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from ai_service.config import ConfigError, GatewayConfig, load_config, parse_config
from ai_service.limits.prices import Pricebook
from tests.conftest import EXAMPLE_CONFIG_ENV, REPO

EXAMPLE = REPO / "examples" / "config.yaml"
MINIMAL = REPO / "examples" / "openai.yaml"
ENV = EXAMPLE_CONFIG_ENV
SECRETS = tuple(ENV)


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE, env=ENV)
    assert config.server.listen == "0.0.0.0:50051"
    assert {p.name for p in config.providers} == {
        "openai", "local-vllm", "anthropic", "ollama", "azure", "azure-entra", "gemini",
        "vertex", "bedrock", "bedrock-keys",
    }  # fmt: skip
    assert {p.kind for p in config.providers} == {
        "openai", "anthropic", "ollama", "azure_openai", "gemini", "vertex", "bedrock"
    }  # fmt: skip
    openai = next(p for p in config.providers if p.name == "openai")
    assert openai.api_key is not None
    assert openai.api_key.get_secret_value() == "sk-example"
    assert all(k.key_sha256 for k in config.auth.keys if k.name != "ops")
    assert [k.models for k in config.auth.keys if k.name == "batch-jobs"] == [("local-llama",)]


@pytest.mark.parametrize("secret", SECRETS)
def test_example_config_gives_no_secret_a_default(secret: str) -> None:
    env = {name: value for name, value in ENV.items() if name != secret}
    with pytest.raises(ConfigError, match=rf"environment variable {secret} is not set"):
        load_config(EXAMPLE, env=env)


def test_every_unset_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(EXAMPLE, env={})
    assert all(name in str(refused.value) for name in SECRETS)


def test_minimal_example_is_short_and_needs_its_two_secrets() -> None:
    assert len(MINIMAL.read_text(encoding="utf-8").splitlines()) <= 20
    config = load_config(
        MINIMAL, env={"OPENAI_API_KEY": "sk-x", "AI_SERVICE_KEY": ENV["AI_SERVICE_OPS_KEY"]}
    )
    assert [m.name for m in config.models] == ["gpt-4o-mini", "gpt-4o"]
    with pytest.raises(ConfigError, match="AI_SERVICE_KEY is not set"):
        load_config(MINIMAL, env={"OPENAI_API_KEY": "sk-x"})


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `X`, `X | None` or `tuple[X, ...]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple):
        for arg in typing.get_args(annotation):
            found = _model_class(arg)
            if found is not None:
                return found
    return None


def _missing_fields(model: type[BaseModel], nodes: list[Any], path: str) -> list[str]:
    """Fields of `model` that appear in none of `nodes` (the YAML mappings at `path`)."""
    mappings = [node for node in nodes if isinstance(node, dict)]
    missing = []
    for name, field in model.model_fields.items():
        present = [node[name] for node in mappings if name in node]
        where = f"{path}.{name}" if path else name
        if not present:
            missing.append(where)
            continue
        child = _model_class(field.annotation)
        if child is not None:
            flat = [v for value in present for v in (value if isinstance(value, list) else [value])]
            missing += _missing_fields(child, flat, where)
    return missing


# Settings the example can only show in a comment: a live value would make the example
# depend on a file that exists only where it is deployed.
SHOWN_IN_COMMENTS = {
    "providers.api_key_file": "# api_key_file: ",
    "egress.proxy": "# proxy: ",
    "egress.tls.ca_file": "# ca_file: ",
    "egress.tls.cert_file": "# cert_file: ",
    "egress.tls.key_file": "# key_file: ",
    "providers.egress.tls": "# tls: ",
    "providers.bedrock.session_token": "# session_token: ",
    "auth.jwt.egress.tls.ca_file": "# ca_file: /etc/ai-service/idp-ca.pem",
    "auth.jwt.egress.tls.cert_file": "# cert_file: /etc/ai-service/idp-client.pem",
    "auth.jwt.egress.tls.key_file": "# key_file: /etc/ai-service/idp-client.key",
}


def test_example_config_shows_every_setting() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = _missing_fields(GatewayConfig, [yaml.safe_load(text)], "")
    missing = [
        field
        for field in missing
        if field not in SHOWN_IN_COMMENTS or SHOWN_IN_COMMENTS[field] not in text
    ]
    assert not missing, f"examples/config.yaml does not show: {', '.join(missing)}"


PRICES = REPO / "examples" / "prices.yaml"


def test_example_prices_say_when_they_were_read_and_price_every_example_model() -> None:
    text = PRICES.read_text(encoding="utf-8")
    assert text.count("Read on 2026-") + text.count("read on 2026-") >= 2  # each provider's
    prices = yaml.safe_load(text)["cost"]
    tree = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    tree["cost"] = prices
    config = parse_config(tree, env=ENV)
    book = Pricebook(config.cost, config.models)
    assert all(not unpriced for unpriced in book.unpriced.values()), book.unpriced
    # examples/config.yaml carries the same prices (one list to check, not two to drift).
    assert load_config(EXAMPLE, env=ENV).cost == config.cost
