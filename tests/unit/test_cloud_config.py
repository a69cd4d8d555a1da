"""The cloud providers' settings: each kind's block, refused where it does not belong, and
every cloud secret only from the environment."""

from __future__ import annotations

from typing import Any

import pytest

from ai_service.config import ConfigError, parse_config

ENV = {"SECRET": "from-the-environment"}


def config(provider: dict[str, Any]) -> Any:
    tree = {
        "auth": {"keys": [{"name": "k", "key": "secret-0123456789"}]},
        "providers": [{"name": "p", "base_url": "https://example.invalid", **provider}],
        "models": [{"name": "m", "provider": "p", "upstream_model": "u"}],
    }
    return parse_config(tree, env=ENV).providers[0]


def test_each_kind_takes_its_block() -> None:
    azure = config({"kind": "azure_openai", "azure_openai": {"api_version": "v1"}})
    assert azure.azure_openai.api_version == "v1"
    assert config({"kind": "azure_openai"}).azure_openai is None  # 2024-10-21, the default
    assert config({"kind": "gemini"}).gemini is None
    vertex = config({"kind": "vertex", "vertex": {"project": "p", "location": "global"}})
    assert (vertex.vertex.publisher, vertex.vertex.api_version) == ("google", "v1")
    bedrock = config({"kind": "bedrock", "bedrock": {"region": "eu-west-1", "profile": "x"}})
    assert bedrock.bedrock.profile == "x"
    entra = {"tenant_id": "t", "client_id": "c", "client_secret": "${SECRET}"}
    signed_in = config({"kind": "azure_openai", "azure_openai": {"entra": entra}})
    assert signed_in.azure_openai.entra.client_secret.get_secret_value() == ENV["SECRET"]
    assert signed_in.azure_openai.entra.token_url == (
        "https://login.microsoftonline.com/t/oauth2/v2.0/token"
    )


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ({"kind": "openai", "gemini": {}}, "gemini: only for kind gemini, not openai"),
        ({"kind": "vertex"}, "vertex: kind vertex needs its project and location"),
        ({"kind": "bedrock"}, "bedrock: kind bedrock needs its region"),
        (
            {"kind": "vertex", "api_key": "${SECRET}", "vertex": {"project": "p", "location": "l"}},
            "Vertex AI takes OAuth tokens",
        ),
        (
            {
                "kind": "azure_openai",
                "api_key": "${SECRET}",
                "azure_openai": {
                    "entra": {"tenant_id": "t", "client_id": "c", "client_secret": "${SECRET}"}
                },
            },
            "give the resource key or azure_openai.entra, not both",
        ),
        ({"kind": "azure_openai", "azure_openai": {"api_version": "latest"}}, "not an Azure"),
        (
            {"kind": "bedrock", "bedrock": {"region": "r", "access_key_id": "${SECRET}"}},
            "give both or neither",
        ),
        (
            {
                "kind": "bedrock",
                "bedrock": {
                    "region": "r",
                    "profile": "x",
                    "access_key_id": "${SECRET}",
                    "secret_access_key": "${SECRET}",
                },
            },
            "static keys and a profile exclude each other",
        ),
    ],
)
def test_a_block_that_does_not_fit_is_refused_naming_it(
    provider: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config(provider)


@pytest.mark.parametrize(
    ("provider", "path"),
    [
        (
            {
                "kind": "azure_openai",
                "azure_openai": {
                    "entra": {"tenant_id": "t", "client_id": "c", "client_secret": "written"}
                },
            },
            "azure_openai.entra.client_secret",
        ),
        (
            {
                "kind": "bedrock",
                "bedrock": {
                    "region": "r",
                    "access_key_id": "AKID",
                    "secret_access_key": "${SECRET}",
                },
            },
            "bedrock.access_key_id",
        ),
        (
            {
                "kind": "bedrock",
                "bedrock": {"region": "r", "access_key_id": "${SECRET}", "secret_access_key": "s"},
            },
            "bedrock.secret_access_key",
        ),
    ],
)
def test_a_cloud_secret_written_into_the_config_is_refused(
    provider: dict[str, Any], path: str
) -> None:
    with pytest.raises(ConfigError, match=rf"providers\[0\]\.{path}: give it as an environment"):
        config(provider)
