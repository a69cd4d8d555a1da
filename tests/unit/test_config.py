"""Configuration: validated once, errors name the bad field, secrets come from the environment."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from ai_service.config import (
    DEMO_KEY,
    ConfigError,
    embedded_default,
    load_config,
    parse_config,
    with_listen,
    with_metrics_listen,
    with_sections,
)

SAME = "the-same-secret-0123"
SAME_DIGEST = "sha256:" + hashlib.sha256(SAME.encode()).hexdigest()
KEY_A, KEY_B = "caller-key-a-0123456", "caller-key-b-0123456"


def tree(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "auth": {"keys": [{"name": "k", "key": "caller-secret-0123"}]},
        "providers": [{"name": "p", "base_url": "http://127.0.0.1:9/v1"}],
        "models": [{"name": "m", "provider": "p", "upstream_model": "u"}],
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"models": [{"name": "m", "provider": "nope", "upstream_model": "u"}]},
            "models[0].provider: unknown provider 'nope'",
        ),
        (
            {"providers": [{"name": "p", "base_url": "ftp://x"}]},
            "providers[0]: base_url must start with http",
        ),
        (
            {"providers": [{"name": "p", "base_url": "http://x", "pool": {"max_connections": 0}}]},
            "providers[0].pool.max_connections",
        ),
        (
            {"providers": [{"name": "p", "base_url": "http://x", "kind": "cohere"}]},
            "providers[0].kind",
        ),
        (
            {"providers": [{"name": "p", "base_url": "http://x", "timout": 3}]},
            "providers[0].timout: Extra inputs are not permitted",
        ),
        (
            {"auth": {"keys": [{"name": "k"}]}},
            "auth.keys[0]: give exactly one of 'key' or 'key_sha256'",
        ),
        (
            {"auth": {"keys": [{"name": "k", "key_sha256": "abc"}]}},
            "auth.keys[0]: key_sha256 must be 'sha256:'",
        ),
        (
            {"auth": {"keys": [{"name": "k", "key": KEY_A, "models": ["x"]}]}},
            "auth.keys[0].models: unknown model 'x'",
        ),
        ({"auth": {"keys": []}}, "auth.keys: auth is enabled but no key is configured"),
        (
            {"auth": {"keys": [{"name": "k", "key": KEY_A}, {"name": "k", "key": KEY_B}]}},
            "auth.keys[1].name: duplicate name 'k'",
        ),
        (
            {"auth": {"keys": [{"name": "a", "key": SAME}, {"name": "b", "key": SAME}]}},
            "auth.keys[1]: key 'b' has the same secret as key 'a'",
        ),
        (
            {
                "auth": {
                    "keys": [
                        {"name": "a", "key": SAME},
                        {"name": "b", "key_sha256": SAME_DIGEST},
                    ]
                }
            },
            "auth.keys[1]: key 'b' has the same secret as key 'a'",
        ),
        (
            {"auth": {"keys": [{"name": "a", "key": KEY_A}, {"name": "b", "key": "hunter2"}]}},
            "auth.keys[1].key: too short: 7 characters, at least 16 needed",
        ),
        (
            {"auth": {"keys": [{"name": "a", "key": "abababababababababab"}]}},
            "auth.keys[0].key: too little variety: 2 distinct characters, at least 8 needed",
        ),
        ({"server": {"listen": "nowhere"}}, "server.listen: expected HOST:PORT"),
        ({"rate_limit": {"requests_per_minute": -1}}, "rate_limit.requests_per_minute"),
        ({"models": []}, "models: Tuple should have at least 1 item"),
        (
            {"redaction": {"custom": [{"name": "ORDER", "pattern": r"\d*"}]}},
            "redaction.custom[0].pattern: matches the empty string: a pattern must match some text",
        ),
        (
            {"redaction": {"custom": [{"name": "ORDER", "pattern": "(unclosed"}]}},
            "redaction.custom[0].pattern: not a valid regular expression",
        ),
    ],
)
def test_invalid_config_names_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(tree(**overrides), env={})
    assert message.lower() in str(caught.value).lower()


def test_env_interpolation_fills_secrets_and_defaults() -> None:
    config = parse_config(
        tree(
            providers=[
                {
                    "name": "p",
                    "base_url": "${BASE:-http://127.0.0.1:1/v1}",
                    "api_key": "${OPENAI_API_KEY}",
                }
            ]
        ),
        env={"OPENAI_API_KEY": "sk-from-env"},
    )
    provider = config.providers[0]
    assert provider.base_url == "http://127.0.0.1:1/v1"
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "sk-from-env"
    assert "sk-from-env" not in repr(config)  # secrets never print


def test_missing_env_var_names_the_field_and_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"providers\[0\]\.api_key: environment variable NOPE"):
        parse_config(
            tree(providers=[{"name": "p", "base_url": "http://x", "api_key": "${NOPE}"}]), env={}
        )


def test_demo_key_may_only_listen_on_loopback() -> None:
    config = embedded_default("http://127.0.0.1:9")
    assert with_listen(config, "[::1]:5000").server.listen == "[::1]:5000"
    with pytest.raises(ConfigError, match=r"server\.listen: the demo key is enabled"):
        with_listen(config, "0.0.0.0:50051")


def test_the_demo_key_given_by_its_hash_may_only_listen_on_loopback_too() -> None:
    digest = "sha256:" + hashlib.sha256(DEMO_KEY.encode()).hexdigest()
    keys = {"keys": [{"name": "demo", "key_sha256": digest}]}
    with pytest.raises(ConfigError, match=r"server\.listen: the demo key is enabled"):
        parse_config(tree(auth=keys, server={"listen": "0.0.0.0:50051"}), env={})


def test_sections_kept_by_a_reload_are_checked_with_the_rest() -> None:
    # A reload keeps the running `server` section: a file that adds the demo key must
    # not slip it onto a public address the running server already listens on.
    public = parse_config(tree(server={"listen": "0.0.0.0:50051"}), env={})
    with_demo = embedded_default("http://127.0.0.1:9")
    with pytest.raises(ConfigError, match=r"server\.listen: the demo key is enabled"):
        with_sections(with_demo, {"server": public.server})


def test_yaml_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_a_yaml_error_names_the_place_without_quoting_the_line(tmp_path: Path) -> None:
    # PyYAML quotes the offending line, which may hold a caller key; the message is logged.
    bad = tmp_path / "keys.yaml"
    bad.write_text('auth:\n  keys:\n    - name: prod\n      key: "caller-secret-0123\n')
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert "caller-secret" not in str(caught.value)
    assert "while scanning a quoted scalar (line 4, column 12)" in str(caught.value)
    bad.write_text("auth:\n  keys: \x01\n")  # a character YAML does not read
    with pytest.raises(ConfigError, match=r"unacceptable character #x0001.*position 14"):
        load_config(bad)


def test_a_provider_key_written_into_the_config_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"providers\[0\]\.api_key: give the key as an environment"
    ):
        parse_config(
            tree(providers=[{"name": "p", "base_url": "http://x", "api_key": "sk-live"}]), env={}
        )


def test_a_provider_key_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "openai.key"
    secret.write_text("sk-from-a-file\n", encoding="utf-8")
    provider = {"name": "p", "base_url": "http://x", "api_key_file": str(secret)}
    config = parse_config(tree(providers=[provider]), env={})
    assert config.providers[0].api_key is not None
    assert config.providers[0].api_key.get_secret_value() == "sk-from-a-file"
    with pytest.raises(ConfigError, match="api_key_file: cannot read"):
        parse_config(tree(providers=[{**provider, "api_key_file": str(tmp_path / "nope")}]), env={})
    both = {**provider, "api_key": "${K}"}
    with pytest.raises(ConfigError, match="not both"):
        parse_config(tree(providers=[both]), env={"K": "x"})
    # `--listen` and `--metrics-listen` change a validated config: the file is not read
    # again, nor its key taken for a second one.
    moved = with_metrics_listen(with_listen(config, "127.0.0.1:5001"), "127.0.0.1:9001")
    assert moved.providers == config.providers and moved.server.listen == "127.0.0.1:5001"


def test_a_model_may_not_take_a_grpc_services_name() -> None:
    # Health answers for the service under that name: a model's status would replace it.
    model = {"name": "ai_service.v1.AIService", "provider": "p", "upstream_model": "m"}
    with pytest.raises(ConfigError, match=r"models\[0\]\.name: .*gRPC service's name"):
        parse_config(
            tree(providers=[{"name": "p", "base_url": "http://x"}], models=[model]), env={}
        )


def test_a_shared_deployment_takes_the_limit_a_model_sets_and_refuses_two() -> None:
    from ai_service.config import deployment_limits

    def model(name: str, **limits: int) -> dict[str, Any]:
        return {"name": name, "deployments": [{"provider": "p", "upstream_model": "m", **limits}]}

    provider = [{"name": "p", "base_url": "http://x"}]
    config = parse_config(
        tree(providers=provider, models=[model("plain"), model("strict", max_concurrency=2)]),
        env={},
    )
    assert deployment_limits(config.models) == {("p", "m"): (2, None)}  # whoever comes first
    two = [model("a", max_concurrency=2), model("b", max_concurrency=3)]
    with pytest.raises(ConfigError, match=r"models\[1\]\.deployments\[0\]\.max_concurrency"):
        parse_config(tree(providers=provider, models=two), env={})
