"""The identity provider's keys are fetched through the egress settings: with a proxy
configured, the JWK Set request goes through it (tinyproxy here), as upstream calls do."""

from __future__ import annotations

from pathlib import Path

from ai_service_client import AsyncAIClient
from tests.conftest import StartGateway, free_port
from tests.identity_provider import identity_provider, jwt_settings
from tests.servers import tinyproxy


async def test_the_key_set_is_fetched_through_the_configured_proxy(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    with tinyproxy(free_port(), tmp_path / "proxy") as proxy:
        async with identity_provider() as idp:
            settings = jwt_settings(idp, egress={"proxy": proxy.url()})
            gateway = await start_gateway(auth__jwt=settings)
            async with AsyncAIClient(gateway.address, idp.token(), timeout=10) as client:
                assert [m.id for m in await client.list_models()] == ["sim-gpt", "sim-other"]
            assert idp.fetches >= 1
    assert f"GET {idp.url} HTTP/1.1" in proxy.requests()
