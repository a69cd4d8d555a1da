"""Bearer tokens from a local identity provider: a JWK Set served over HTTP, keys rotated
during the test, and every kind of bad token refused with its own reason."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jwt
import pytest

from ai_service.runtime.gateway import Gateway
from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, Message
from tests.conftest import TEST_KEY, StartGateway
from tests.identity_provider import IdentityProvider, identity_provider, jwt_settings

HELLO = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hello")])
ROLES = [
    {"name": "admins", "admin": True},
    {"name": "readers", "models": ["sim-other"], "rate_limit": {"requests_per_minute": 1000}},
]


@pytest.fixture
async def idp() -> AsyncIterator[IdentityProvider]:
    async with identity_provider() as provider:
        yield provider


async def token_gateway(start: StartGateway, idp: IdentityProvider, **jwt: Any) -> Gateway:
    claims = {"team": "team", "roles": "roles", "models": "models"}
    settings = jwt_settings(idp, claims=claims, **jwt)
    # Every refusal here comes from one address: the failed-authentication throttle
    # (tested on its own) would answer some of them before the token is even read.
    return await start(auth__jwt=settings, auth__roles=ROLES, auth__failed_attempts_per_minute=0)


async def chat(gateway: Gateway, credential: str) -> Any:
    async with AsyncAIClient(gateway.address, credential, timeout=10) as client:
        return await client.chat(HELLO)


async def models(gateway: Gateway, credential: str) -> list[str]:
    async with AsyncAIClient(gateway.address, credential, timeout=10) as client:
        return [model.id for model in await client.list_models()]


async def refusal(gateway: Gateway, credential: str) -> AIServiceError:
    with pytest.raises(AIServiceError) as caught:
        await chat(gateway, credential)
    error = caught.value
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert credential not in str(error) and credential not in repr(error.error_metadata)
    return error


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
async def test_a_valid_token_is_accepted(start_gateway: StartGateway, algorithm: str) -> None:
    async with identity_provider(algorithm) as idp:
        gateway = await token_gateway(start_gateway, idp)
        answer = await chat(gateway, idp.token(sub="alice"))
        assert answer.choices[0].message.content == "You said: hello"


async def test_claims_name_the_caller_and_roles_give_its_grants(
    start_gateway: StartGateway, idp: IdentityProvider
) -> None:
    gateway = await token_gateway(start_gateway, idp)
    assert await models(gateway, idp.token(roles=["readers"])) == ["sim-other"]
    # A claim of models wins over the role's; an unknown role is ignored.
    assert await models(gateway, idp.token(roles=["readers"], models=["sim-gpt"])) == ["sim-gpt"]
    assert await models(gateway, idp.token(roles="nobody")) == ["sim-gpt", "sim-other"]
    caller = await gateway.identities.tokens.verify(  # type: ignore[union-attr]
        idp.token(sub="bob", team="search", roles="admins readers")
    )
    assert (caller.name, caller.source, caller.team) == ("bob", "jwt", "search")
    assert caller.admin and caller.roles == {"admins", "readers"}
    # Grants come from the first of its roles that auth.roles lists: `admins`, all models.
    assert caller.models == frozenset()


async def test_a_verified_token_is_not_checked_again(
    start_gateway: StartGateway, idp: IdentityProvider
) -> None:
    gateway = await token_gateway(start_gateway, idp)
    tokens = gateway.identities.tokens
    assert tokens is not None
    token = idp.token()
    assert tokens.cached(token) is None
    await chat(gateway, token)
    cached = tokens.cached(token)
    assert cached is not None and cached.name == "alice"
    await chat(gateway, token)
    assert tokens.cached(token) is cached


def _hs256_with_the_public_key(idp: IdentityProvider) -> str:
    # The classic confusion: the public key (which anyone has) used as an HMAC secret.
    # PyJWT refuses to sign with a PEM as HMAC secret, so the token is built by hand.
    import base64
    import hashlib
    import hmac
    import json

    def encode(part: bytes) -> str:
        return base64.urlsafe_b64encode(part).rstrip(b"=").decode()

    header = encode(json.dumps({"alg": "HS256", "typ": "JWT", "kid": idp.published[-1]}).encode())
    payload = encode(json.dumps(idp.claims()).encode())
    secret = idp.public_pem(idp.published[-1])
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{encode(signature)}"


def _forged(idp: IdentityProvider) -> str:
    """Signed by a key the provider never published, under a published kid."""
    stranger = idp.add_key(publish=False)
    key, algorithm = idp.keys[stranger]
    return jwt.encode(idp.claims(), key, algorithm=algorithm, headers={"kid": idp.published[-1]})


BAD_TOKENS = {
    "expired": ("TOKEN_EXPIRED", lambda idp: idp.token(exp=int(time.time()) - 120)),
    "not-yet-valid": ("TOKEN_NOT_YET_VALID", lambda idp: idp.token(nbf=int(time.time()) + 600)),
    "wrong-issuer": ("TOKEN_ISSUER_INVALID", lambda idp: idp.token(iss="https://evil.test/")),
    "wrong-audience": ("TOKEN_AUDIENCE_INVALID", lambda idp: idp.token(aud="another-service")),
    "no-expiry": ("TOKEN_CLAIM_MISSING", lambda idp: idp.token(exp=None)),
    "no-subject": ("TOKEN_CLAIM_MISSING", lambda idp: idp.token(sub=None)),
    "alg-none": (
        "TOKEN_ALGORITHM_NOT_ALLOWED",
        lambda idp: jwt.encode(idp.claims(), None, algorithm="none"),
    ),
    "hs256-with-the-public-key": ("TOKEN_ALGORITHM_NOT_ALLOWED", _hs256_with_the_public_key),
    "wrong-signature": ("TOKEN_SIGNATURE_INVALID", _forged),
    "unknown-kid": (
        "TOKEN_KEY_UNKNOWN",
        lambda idp: jwt.encode(
            idp.claims(), idp.keys[idp.published[-1]][0], "RS256", headers={"kid": "forged"}
        ),
    ),
    "malformed": ("TOKEN_MALFORMED", lambda idp: "eyJub3QganNvbg.bm90IGpzb24.c2ln"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_a_bad_token_is_refused_with_its_reason(
    start_gateway: StartGateway, idp: IdentityProvider, simulator: Simulator, case: str
) -> None:
    gateway = await token_gateway(start_gateway, idp)
    reason, make = BAD_TOKENS[case]
    token = make(idp)
    error = await refusal(gateway, token)
    assert error.reason == reason, error
    assert simulator.stats.total_requests == 0


async def test_config_keys_keep_working_beside_tokens(
    start_gateway: StartGateway, idp: IdentityProvider
) -> None:
    gateway = await token_gateway(start_gateway, idp)
    assert await chat(gateway, TEST_KEY)
    error = await refusal(gateway, "not-a-key")
    assert error.reason == "UNAUTHENTICATED" and "invalid API key" in error.message


async def test_a_flood_of_unknown_kids_fetches_the_key_set_at_most_once_per_interval(
    start_gateway: StartGateway, idp: IdentityProvider
) -> None:
    gateway = await token_gateway(start_gateway, idp, refresh_interval_seconds=30)
    assert await chat(gateway, idp.token())  # the keys are fetched (once, at start)
    before = idp.fetches
    key = idp.keys[idp.published[-1]][0]
    forged = [
        jwt.encode(idp.claims(), key, "RS256", headers={"kid": f"forged-{i}"}) for i in range(40)
    ]
    errors = await asyncio.gather(*(refusal(gateway, token) for token in forged))
    assert {error.reason for error in errors} == {"TOKEN_KEY_UNKNOWN"}
    assert idp.fetches - before <= 1  # within the interval of the first fetch: none at all
    assert idp.fetches <= 2


async def test_rotated_keys_are_fetched_when_a_token_names_one(
    start_gateway: StartGateway, idp: IdentityProvider
) -> None:
    gateway = await token_gateway(start_gateway, idp, refresh_interval_seconds=1)
    old_token = idp.token()
    assert await chat(gateway, old_token)
    started, fetched_before = time.monotonic(), idp.fetches
    idp.rotate("ES256")
    new_token = idp.token()
    # Refused until the interval since the last fetch has passed; then fetched once.
    while True:
        try:
            assert await chat(gateway, new_token)
            break
        except AIServiceError as error:
            assert error.reason == "TOKEN_KEY_UNKNOWN"
            assert time.monotonic() - started < 20, "the rotated key was never fetched"
            await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    assert idp.fetches - fetched_before <= elapsed / 1 + 1
    assert await chat(gateway, old_token)  # verified before: trusted until it expires


async def test_an_unreachable_provider_leaves_cached_keys_working_and_is_logged_once(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    async with identity_provider() as idp:
        gateway = await token_gateway(start_gateway, idp, refresh_interval_seconds=30)
        assert await chat(gateway, idp.token(sub="first"))
    # The provider is gone. Tokens signed with a cached key still work...
    caplog.set_level(logging.ERROR, logger="ai_service.identity.jwks")
    assert await chat(gateway, idp.token(sub="second"))
    # ... and a burst of unknown kids tries (and fails) at most once, logged once.
    jwks = gateway.identities.tokens.jwks  # type: ignore[union-attr]
    jwks._attempted = -float("inf")  # as if the interval had passed
    key = idp.keys[idp.published[-1]][0]
    for i in range(10):
        token = jwt.encode(idp.claims(), key, "RS256", headers={"kid": f"new-{i}"})
        assert (await refusal(gateway, token)).reason == "TOKEN_KEY_UNKNOWN"
    assert await chat(gateway, idp.token(sub="third"))
    failures = [r for r in caplog.records if "cannot fetch" in r.getMessage()]
    assert len(failures) == 1
    assert idp.url in str(failures[0].__dict__.get("url"))
