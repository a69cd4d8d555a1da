"""Client certificates as identities: over mutual TLS, a call with no key or token is
identified by the certificate's subjectAltName or common name (`auth.certificates`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from ai_service.runtime.gateway import Gateway
from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient, TLSOptions
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, Message
from tests.certs import Certificates, issue, make_certificates
from tests.conftest import TEST_KEY, StartGateway

SPIFFE_ID = "spiffe://example.org/ns/billing/sa/api"
HELLO = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hello")])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def billing(certs: Certificates) -> tuple[Path, Path]:
    """A client certificate whose subjectAltName is a SPIFFE id."""
    return issue(
        certs.ca.parent, certs.ca, certs.ca_key, "billing", client_names=f"URI:{SPIFFE_ID}"
    )


async def mtls_gateway(start: StartGateway, certs: Certificates, audit: Path) -> Gateway:
    tls = {
        "cert_file": str(certs.server_cert),
        "key_file": str(certs.server_key),
        "client_ca_file": str(certs.ca),
    }
    return await start(
        server={"listen": "127.0.0.1:0", "tls": tls},
        auth__certificates=[
            {
                "name": "billing-service",
                "san_uri": SPIFFE_ID,
                "team": "billing",
                "models": ["sim-gpt"],
                "rate_limit": {"requests_per_minute": 3, "burst": 3},
            },
            {"name": "reports", "subject_cn": "reports"},
        ],
        observability={"metrics": {"enabled": False}, "audit": {"path": str(audit)}},
    )


def client(
    gateway: Gateway, certs: Certificates, pair: tuple[Path, Path], key: str | None
) -> AsyncAIClient:
    tls = TLSOptions(
        root_certificates_path=certs.ca,
        client_certificate_path=pair[0],
        client_key_path=pair[1],
    )
    return AsyncAIClient(gateway.address, key, tls=tls, timeout=10)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


async def audit_records(path: Path, count: int) -> list[dict[str, object]]:
    for _ in range(200):  # the writer appends in batches: wait for them
        lines = await asyncio.to_thread(_lines, path)
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} audit records in {path}")


async def test_a_certificate_identifies_the_caller_without_any_secret(
    start_gateway: StartGateway, certs: Certificates, billing: tuple[Path, Path], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    gateway = await mtls_gateway(start_gateway, certs, audit)
    async with client(gateway, certs, billing, None) as service:
        assert [m.id for m in await service.list_models()] == ["sim-gpt"]
        answer = await service.chat(HELLO)
        assert answer.choices[0].message.content == "You said: hello"
        chunks = [chunk async for chunk in service.stream_chat(HELLO)]
        assert chunks and chunks[-1].choices[0].finish_reason
        # Its own rate limit applies as any key's would (3 a minute, all spent).
        with pytest.raises(AIServiceError) as caught:
            await service.chat(HELLO)
        assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "billing-service" in caught.value.message
    records = await audit_records(audit, 3)
    assert {(r["key"], r["identity"], r["team"]) for r in records} == {
        ("billing-service", "certificate", "billing")
    }


async def test_a_key_in_the_metadata_wins_over_the_certificate(
    start_gateway: StartGateway, certs: Certificates, billing: tuple[Path, Path], tmp_path: Path
) -> None:
    gateway = await mtls_gateway(start_gateway, certs, tmp_path / "audit.jsonl")
    async with client(gateway, certs, billing, TEST_KEY) as tester:
        assert [m.id for m in await tester.list_models()] == ["sim-gpt", "sim-other"]
    async with client(gateway, certs, billing, "not-a-key") as wrong:
        with pytest.raises(AIServiceError) as caught:
            await wrong.list_models()
        assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED


async def test_a_certificate_that_identifies_no_caller_is_unauthenticated(
    start_gateway: StartGateway, certs: Certificates, simulator: Simulator, tmp_path: Path
) -> None:
    gateway = await mtls_gateway(start_gateway, certs, tmp_path / "audit.jsonl")
    # The fixture's client certificate is CN=client, which no entry names.
    async with client(gateway, certs, (certs.client_cert, certs.client_key), None) as stranger:
        for attempt in (stranger.chat(HELLO), stranger.list_models()):
            with pytest.raises(AIServiceError) as caught:
                await attempt
            assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
            assert "identifies no caller" in caught.value.message
    assert simulator.stats.total_requests == 0


async def test_the_common_name_identifies_a_caller_too(
    start_gateway: StartGateway, certs: Certificates, tmp_path: Path
) -> None:
    gateway = await mtls_gateway(start_gateway, certs, tmp_path / "audit.jsonl")
    reports = issue(certs.ca.parent, certs.ca, certs.ca_key, "reports")
    async with client(gateway, certs, reports, None) as service:
        assert (await service.chat(HELLO)).choices[0].message.content == "You said: hello"
