"""Identity settings and grants: what the config refuses, and how a caller's grants resolve."""

from __future__ import annotations

from typing import Any

import pytest

from ai_service.config import (
    CallerGrants,
    ConfigError,
    RateLimitSettings,
    RoleSettings,
    parse_config,
)
from ai_service.identity.callers import Grantor
from ai_service.identity.jwks import JwksUnavailable, usable_keys
from ai_service.identity.keyring import looks_like_jwt

BASE: dict[str, Any] = {
    "auth": {"keys": [{"name": "k", "key": "key-0123456789abcdef"}]},
    "providers": [{"name": "p", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"}],
    "models": [{"name": "m", "provider": "p", "upstream_model": "m"}],
}
MTLS = {"tls": {"cert_file": "c.pem", "key_file": "k.pem", "client_ca_file": "ca.pem"}}
JWT = {"jwks_url": "https://idp.example/jwks", "issuer": "https://idp.example/", "audience": "a"}


def config(auth: dict[str, Any], **top: Any) -> Any:
    return parse_config({**BASE, "auth": {**BASE["auth"], **auth}, **top}, env={})


@pytest.mark.parametrize(
    ("auth", "top", "error"),
    [
        (
            {"keys": [{"name": "k", "key": "key-0123456789abcdef", "roles": ["x"]}]},
            {},
            "auth.keys[0].roles: unknown role 'x'",
        ),
        ({"roles": [{"name": "r", "models": ["nope"]}]}, {}, "auth.roles[0].models: unknown model"),
        ({"roles": [{"name": "r"}, {"name": "r"}]}, {}, "auth.roles[1].name: duplicate name"),
        (
            {"certificates": [{"name": "c", "subject_cn": "c"}]},
            {},
            "client certificates need mutual TLS",
        ),
        ({"certificates": [{"name": "c"}]}, {"server": MTLS}, "exactly one of subject_cn"),
        (
            {"certificates": [{"name": "c", "san_dns": "a", "san_uri": "b"}]},
            {"server": MTLS},
            "exactly one of subject_cn",
        ),
        (
            {"certificates": [{"name": "c", "san_dns": "a"}, {"name": "d", "san_dns": "a"}]},
            {"server": MTLS},
            "auth.certificates[1].san_dns: 'a' already identifies 'c'",
        ),
        ({"jwt": {**JWT, "jwks_url": "http://idp.example/jwks"}}, {}, "http:// is only allowed"),
        ({"jwt": {**JWT, "algorithms": ["HS256"]}}, {}, "auth.jwt.algorithms"),
        ({"jwt": {**JWT, "algorithms": ["none"]}}, {}, "auth.jwt.algorithms"),
        ({"jwt": {**JWT, "default_role": "x"}}, {}, "auth.jwt.default_role: unknown role 'x'"),
        ({"keys": [], "virtual_keys": {"enabled": False}}, {}, "no key is configured"),
    ],
)
def test_identity_settings_that_cannot_work_are_refused_naming_the_field(
    auth: dict[str, Any], top: dict[str, Any], error: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config(auth, **top)
    assert error in str(caught.value)


def test_tokens_or_issued_keys_alone_are_enough_to_call() -> None:
    assert config({"keys": [], "jwt": JWT}).auth.jwt.audience == ("a",)
    assert config({"keys": [], "virtual_keys": {"enabled": True}}).auth.virtual_keys.enabled
    loopback = config({"jwt": {**JWT, "jwks_url": "http://127.0.0.1:8080/jwks"}})
    assert loopback.auth.jwt.egress.proxy is not None  # decided at load: `direct` here


def test_grants_come_from_the_caller_then_its_first_listed_role_then_the_defaults() -> None:
    roles = [
        RoleSettings(name="admins", admin=True),
        RoleSettings(
            name="users",
            models=("m",),
            rate_limit=RateLimitSettings(requests_per_minute=5),
            max_output_tokens=100,
        ),
    ]
    grantor = Grantor(roles, RateLimitSettings(requests_per_minute=60))
    user = grantor.caller("u", "jwt", CallerGrants(roles=("users", "ghost"), max_output_tokens=7))
    assert user.models == {"m"} and user.max_output_tokens == 7
    assert user.rate is not None and user.rate.per_minute == 5
    assert user.roles == {"users"} and not user.admin and user.source == "jwt"
    both = grantor.caller("b", "config_key", CallerGrants(roles=("users", "admins")))
    assert both.admin and both.models == frozenset()  # `admins` is listed first: all models
    nobody = grantor.caller("n", "certificate", CallerGrants(team="t"))
    assert nobody.rate is not None and nobody.rate.per_minute == 60 and nobody.team == "t"
    claimed = grantor.caller("c", "jwt", CallerGrants(roles=("users",)), models=["x"])
    assert claimed.models == {"x"}


def test_only_public_signing_keys_of_allowed_algorithms_are_used() -> None:
    document = {
        "keys": [
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},  # a shared secret: never
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": "enc",
                "use": "enc",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            },
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": "ed",
                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            },
            {"kty": "weird", "kid": "w"},
        ]
    }
    assert set(usable_keys(document, ("EdDSA",))) == {"ed"}
    assert usable_keys(document, ("RS256",)) == {}
    with pytest.raises(JwksUnavailable):
        usable_keys({"no": "keys"}, ("EdDSA",))


def test_what_looks_like_a_token() -> None:
    assert looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    assert not looks_like_jwt("aik_abc.def.ghi") and not looks_like_jwt("eyJonly.two")
