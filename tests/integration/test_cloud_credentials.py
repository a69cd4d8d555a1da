"""Credentials that never lapse, and never leak: the real gateway against the simulator's
token endpoints (Entra ID, Google OAuth, STS) and its checks of what the APIs receive.

Short-lived tokens from the simulator expire during a run of calls and are renewed ahead
of expiry without a failed call, one renewal for many concurrent callers; a 401 drops the
token and the one retry carries a new one; a renewal that fails is UNAVAILABLE naming its
cause and counts against the deployment's circuit; botocore's chain signs Bedrock calls
with keys from the shared files or from web identity through STS, renewed as botocore
renews them; and no credential reaches a log line or a status.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest

from ai_service.config import parse_config
from ai_service.observability.logging import JsonFormatter
from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator
from ai_service_client import AIServiceError, AsyncAIClient
from tests.clouds import (
    CLOUD_ENV,
    CLOUD_MODELS,
    SERVICE_ACCOUNT,
    TENANT,
    cloud_models,
    cloud_providers,
    service_account_file,
    service_account_key,
)
from tests.conftest import PROVIDER_SECRET, TEST_KEY, StartGateway, config_tree
from tests.integration.test_provider_e2e import ask

TOKEN_MODELS = ["sim-azure-entra", "sim-vertex", "sim-vertex-claude"]
ISSUER = {"sim-azure-entra": "entra", "sim-vertex": "google", "sim-vertex-claude": "google"}
ENTRA_TOKEN_PATH = f"/{TENANT}/oauth2/v2.0/token"


def clouds(simulator: Simulator, folder: Path, **resilience: Any) -> dict[str, Any]:
    tree = config_tree(simulator.base_url)
    tree["providers"] += cloud_providers(
        simulator.base_url, service_account_file(folder, simulator)
    )
    tree["models"] += cloud_models()
    tree["resilience"] = {"retries": {"max_attempts": 1}, **resilience}
    return tree


def provider(tree: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [p for p in tree["providers"] if p["name"] == name]
    return found


async def start(start_gateway: StartGateway, tree: dict[str, Any], **env: str) -> Gateway:
    return await start_gateway(parse_config(tree, env={**CLOUD_ENV, **env}))


def bearer_tokens(simulator: Simulator, model: str) -> list[str]:
    upstream = CLOUD_MODELS[model].upstream
    return [
        r.headers["Authorization"]
        for r in simulator.stats.received
        if r.model == upstream and "Authorization" in r.headers
    ]


async def test_tokens_that_expire_during_a_long_run_are_renewed_without_a_failed_call(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    simulator.config.token_lifetime_seconds = 2  # renewed after 1 s, never sent after 1.5 s
    gateway = await start(start_gateway, clouds(simulator, tmp_path))
    failures: list[BaseException] = []
    calls = 0

    def renewed_tokens_used() -> bool:
        """Every model's calls have carried at least three tokens: two renewals each."""
        return all(len(set(bearer_tokens(simulator, m))) >= 3 for m in TOKEN_MODELS)

    async def keep_calling(client: AsyncAIClient, model: str) -> None:
        nonlocal calls
        while not renewed_tokens_used():
            try:
                if calls % 2:
                    await client.chat(ask(model, "still there"))
                else:
                    [c async for c in client.stream_chat(ask(model, "/tokens 5 still"))]
            except AIServiceError as exc:
                failures.append(exc)
            calls += 1

    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        async with asyncio.timeout(60):
            await asyncio.gather(
                *(keep_calling(client, model) for model in TOKEN_MODELS for _ in range(3))
            )
    assert failures == []
    assert renewed_tokens_used()


async def test_many_concurrent_first_calls_share_one_token_request(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    simulator.config.latency_ms = 20
    gateway = await start(start_gateway, clouds(simulator, tmp_path))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        await asyncio.gather(*(client.chat(ask(m, "hi")) for m in TOKEN_MODELS for _ in range(20)))
    # One provider each for Entra; the two Vertex providers each hold their own token.
    assert simulator.credentials.issued["entra"] == 1
    assert simulator.credentials.issued["google"] == 2


@pytest.mark.parametrize("model", TOKEN_MODELS)
async def test_a_401_drops_the_token_and_the_one_retry_carries_a_new_one(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path, model: str
) -> None:
    gateway = await start(start_gateway, clouds(simulator, tmp_path))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        await client.chat(ask(model, "hi"))
        issued = simulator.credentials.issued[ISSUER[model]]
        simulator.add_fault(
            FaultRule("status", status=401, times=1, model=CLOUD_MODELS[model].upstream)
        )
        answer = await client.chat(ask(model, "again"))
    assert answer.choices[0].message.content == "You said: again"
    assert simulator.credentials.issued[ISSUER[model]] == issued + 1
    first, refused, retried = bearer_tokens(simulator, model)[-3:]
    assert first == refused != retried


async def test_a_token_refused_twice_is_the_gateways_credential_problem(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    gateway = await start(start_gateway, clouds(simulator, tmp_path))
    simulator.add_fault(FaultRule("status", status=401, model=CLOUD_MODELS["sim-vertex"].upstream))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask("sim-vertex", "hi"))
    assert caught.value.code is grpc.StatusCode.INTERNAL
    assert caught.value.reason == "UPSTREAM_AUTH"
    assert simulator.stats.count(model=CLOUD_MODELS["sim-vertex"].upstream) == 2  # one retry


async def test_a_renewal_that_fails_is_unavailable_with_its_cause_and_opens_the_circuit(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    breaker = {"circuit_breaker": {"consecutive_failures": 2, "open_seconds": 60}}
    gateway = await start(start_gateway, clouds(simulator, tmp_path, **breaker))
    simulator.add_fault(FaultRule("status", path=ENTRA_TOKEN_PATH, status=503))
    upstream = CLOUD_MODELS["sim-azure-entra"].upstream
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        for _ in range(2):
            with pytest.raises(AIServiceError) as caught:
                await client.chat(ask("sim-azure-entra", "hi"))
            assert caught.value.code is grpc.StatusCode.UNAVAILABLE
            assert "the Microsoft Entra ID token could not be obtained" in caught.value.message
            assert "HTTP 503" in caught.value.message
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask("sim-azure-entra", "hi"))
        assert caught.value.reason == "NO_HEALTHY_DEPLOYMENT"
        assert (await client.chat(ask("sim-azure", "hi"))).choices  # the other deployment serves
    assert simulator.stats.count(model=upstream) == 0


async def test_a_refused_client_secret_is_named_without_the_secret(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    tree = clouds(simulator, tmp_path)
    wrong = "wrong-client-secret-0123456789"
    provider(tree, "azure-entra")["azure_openai"]["entra"]["client_secret"] = "${WRONG_SECRET}"
    gateway = await start(start_gateway, tree, WRONG_SECRET=wrong)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask("sim-azure-entra", "hi"))
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert "AADSTS7000215" in caught.value.message
    assert wrong not in str(caught.value)


async def test_a_service_account_key_google_does_not_know_is_refused_at_the_token_endpoint(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    gateway = await start(start_gateway, clouds(simulator, tmp_path))
    # The simulator knows another key for the account: the assertion's signature fails.
    simulator.config.google_service_accounts = {SERVICE_ACCOUNT: service_account_key()[1]}
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask("sim-vertex", "hi"))
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert "the Google OAuth access token could not be obtained" in caught.value.message
    assert "Invalid JWT Signature" in caught.value.message


async def test_a_request_signed_with_the_wrong_secret_is_the_gateways_credential_problem(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    tree = clouds(simulator, tmp_path)
    provider(tree, "bedrock")["bedrock"]["secret_access_key"] = "${WRONG_SECRET}"
    gateway = await start(start_gateway, tree, WRONG_SECRET="not-the-secret-access-key")
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask("sim-bedrock", "hi"))
    assert caught.value.code is grpc.StatusCode.INTERNAL
    assert caught.value.reason == "UPSTREAM_AUTH"
    received = simulator.stats.received[-1]
    assert received.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID")
    assert "/us-east-1/bedrock/aws4_request" in received.headers["Authorization"]


# --- botocore's chain -----------------------------------------------------------------------


@pytest.fixture
def no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's chain without what this machine's environment might hold."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance to ask here


def bedrock_with_chain(tree: dict[str, Any], **chain: str) -> dict[str, Any]:
    bedrock = provider(tree, "bedrock")["bedrock"]
    del bedrock["access_key_id"], bedrock["secret_access_key"]
    bedrock.update(chain)
    return tree


@pytest.mark.usefixtures("no_aws_environment")
async def test_bedrock_signs_with_a_profile_of_the_shared_files(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    files = tmp_path / "aws"
    files.mkdir()
    (files / "credentials").write_text(
        f"[team]\naws_access_key_id = AKIDFROMPROFILE\naws_secret_access_key = {PROVIDER_SECRET}\n"
    )
    (files / "config").write_text("")
    tree = bedrock_with_chain(
        clouds(simulator, tmp_path),
        profile="team",
        credentials_file=str(files / "credentials"),
        config_file=str(files / "config"),
    )
    gateway = await start(start_gateway, tree)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        answer = await client.chat(ask("sim-bedrock", "hi"))
    assert answer.choices[0].message.content == "You said: hi"
    assert "Credential=AKIDFROMPROFILE/" in simulator.stats.received[-1].headers["Authorization"]


@pytest.mark.usefixtures("no_aws_environment")
async def test_web_identity_credentials_expiring_during_a_run_are_renewed_by_botocore(
    start_gateway: StartGateway,
    simulator: Simulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    simulator.config.token_lifetime_seconds = 3
    files = tmp_path / "aws"
    files.mkdir()
    (files / "token").write_text("a-web-identity-token")
    (files / "credentials").write_text("")
    (files / "config").write_text(
        "[profile eks]\n"
        "role_arn = arn:aws:iam::123456789012:role/gateway\n"
        f"web_identity_token_file = {files / 'token'}\n"
        "services = simulated\n\n"
        "[services simulated]\nsts =\n"
        f"  endpoint_url = {simulator.base_url}/sts\n"
    )
    tree = bedrock_with_chain(
        clouds(simulator, tmp_path),
        profile="eks",
        credentials_file=str(files / "credentials"),
        config_file=str(files / "config"),
    )
    gateway = await start(start_gateway, tree)
    caplog.set_level(logging.DEBUG)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        async with asyncio.timeout(60):
            while simulator.credentials.issued["sts"] < 3:
                answer = await client.chat(ask("sim-bedrock", "hi"))
                assert answer.choices[0].message.content == "You said: hi"
                [c async for c in client.stream_chat(ask("sim-bedrock", "/tokens 3 go"))]
    signed = [
        r.headers
        for r in simulator.stats.received
        if r.model == CLOUD_MODELS["sim-bedrock"].upstream
    ]
    assert all(h["X-Amz-Security-Token"] for h in signed)  # temporary credentials, with their token
    key_ids = {h["Authorization"].split("Credential=")[1].split("/")[0] for h in signed}
    assert len(key_ids) >= 3  # renewed keys were used
    # STS's answers (botocore logs bodies at DEBUG) are never logged: not even unformatted,
    # since a record is formatted (and scrubbed) before the credentials are known secrets.
    lines = [record.getMessage() for record in caplog.records]
    issued = simulator.credentials.aws_issued
    assert key_ids <= set(issued)
    for secret, token in issued.values():
        assert all(secret not in line and token not in line for line in lines)


@pytest.mark.usefixtures("no_aws_environment")
async def test_no_aws_credentials_anywhere_is_unavailable_naming_the_chain(
    start_gateway: StartGateway, simulator: Simulator, tmp_path: Path
) -> None:
    (tmp_path / "empty").write_text("")
    tree = bedrock_with_chain(
        clouds(simulator, tmp_path),
        credentials_file=str(tmp_path / "empty"),
        config_file=str(tmp_path / "empty"),
    )
    gateway = await start(start_gateway, tree)
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(ask("sim-bedrock", "hi"))
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert "AWS credentials could not be obtained: none found" in caught.value.message
    assert simulator.stats.count(model=CLOUD_MODELS["sim-bedrock"].upstream) == 0


# --- never leaked ---------------------------------------------------------------------------


async def test_no_credential_reaches_a_log_line_or_a_status(
    start_gateway: StartGateway,
    simulator: Simulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = await start(start_gateway, clouds(simulator, tmp_path))
    errors: list[str] = []
    with caplog.at_level(logging.DEBUG):
        async with AsyncAIClient(gateway.address, TEST_KEY, timeout=10) as client:
            for model in CLOUD_MODELS:
                await client.chat(ask(model, "hi"))
            tokens = {
                t.removeprefix("Bearer ") for m in TOKEN_MODELS for t in bearer_tokens(simulator, m)
            }
            for model in CLOUD_MODELS:
                # The upstream quotes the credential back, as some 401 and 400 bodies do.
                for token in [*tokens, PROVIDER_SECRET]:
                    simulator.add_fault(
                        FaultRule(
                            "status",
                            status=400,
                            times=1,
                            model=CLOUD_MODELS[model].upstream,
                            message=f"bad request carrying {token}",
                        )
                    )
                    with pytest.raises(AIServiceError) as caught:
                        await client.chat(ask(model, "hi"))
                    errors.append(str(caught.value))
    lines = [JsonFormatter().format(record) for record in caplog.records]
    secrets = [*tokens, PROVIDER_SECRET]
    assert tokens and lines
    for text in [*lines, *errors]:
        for secret in secrets:
            assert secret not in text
    assert all("***" in error for error in errors)
