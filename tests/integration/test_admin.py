"""The Admin service on one gateway (keys in memory): issue, use, change, list and revoke
keys at runtime; only a caller with an admin role may."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from ai_service.runtime.gateway import Gateway
from ai_service_client import AIServiceError, AsyncAIClient
from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import (
    CreateKeyRequest,
    KeyRateLimit,
    KeySpec,
    ListKeysRequest,
    RevokeKeyRequest,
    UpdateKeyRequest,
)
from tests.conftest import RESTRICTED_KEY, TEST_KEY, StartGateway

ADMIN_KEY = "admin-key-0123456789"


async def admin_gateway(start: StartGateway, **overrides: Any) -> Gateway:
    keys = [
        {"name": "tester", "key": TEST_KEY},
        {"name": "restricted", "key": RESTRICTED_KEY, "models": ["sim-gpt"]},
        {"name": "root", "key": ADMIN_KEY, "roles": ["admins"]},
    ]
    overrides.setdefault("auth__virtual_keys", {"enabled": True})
    return await start(
        auth__keys=keys, auth__roles=[{"name": "admins", "admin": True}], **overrides
    )


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await admin_gateway(start_gateway)


@pytest.fixture
async def admin(gateway: Gateway) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        yield Admin(ai_service_pb2_grpc.AdminStub(channel), ADMIN_KEY)


class Admin:
    """The Admin stub, every call with `key`."""

    def __init__(self, stub: Any, key: str) -> None:
        self._stub, self._metadata = stub, (("authorization", f"Bearer {key}"),)

    def __getattr__(self, method: str) -> Any:
        rpc = getattr(self._stub, method)
        return lambda request: rpc(request, metadata=self._metadata, timeout=10)


async def models_of(gateway: Gateway, key: str) -> list[str]:
    async with AsyncAIClient(gateway.address, key, timeout=10) as client:
        return [model.id for model in await client.list_models()]


async def test_an_issued_key_works_until_revoked(gateway: Gateway, admin: Admin) -> None:
    spec = KeySpec(name="batch", team="search", models=["sim-gpt"])
    created = await admin.CreateKey(CreateKeyRequest(spec=spec))
    secret = created.secret
    assert secret.startswith("aik_") and created.key.spec.name == "batch"
    assert await models_of(gateway, secret) == ["sim-gpt"]
    async with AsyncAIClient(gateway.address, secret, timeout=10) as client:
        assert await client.ask("hi", model="sim-gpt") == "You said: hi"
    listed = await admin.ListKeys(ListKeysRequest())
    assert [(k.id, k.spec.name, k.spec.team, k.created_by) for k in listed.keys] == [
        (created.key.id, "batch", "search", "root")
    ]
    assert secret not in str(listed)
    assert len((await admin.ListKeys(ListKeysRequest(team="other"))).keys) == 0

    update = UpdateKeyRequest(id=created.key.id, spec=KeySpec(models=["sim-other"]))
    update.update_mask.paths.append("models")
    changed = await admin.UpdateKey(update)
    assert changed.spec.name == "batch" and list(changed.spec.models) == ["sim-other"]
    assert await models_of(gateway, secret) == ["sim-other"]

    await admin.RevokeKey(RevokeKeyRequest(id=created.key.id))
    with pytest.raises(AIServiceError) as caught:
        await models_of(gateway, secret)
    assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert len((await admin.ListKeys(ListKeysRequest())).keys) == 0
    assert await models_of(gateway, TEST_KEY) == ["sim-gpt", "sim-other"]  # config keys stay


async def test_an_issued_key_has_its_own_limits(gateway: Gateway, admin: Admin) -> None:
    spec = KeySpec(name="slow", rate_limit=KeyRateLimit(requests_per_minute=2))
    secret = (await admin.CreateKey(CreateKeyRequest(spec=spec))).secret
    async with AsyncAIClient(gateway.address, secret, timeout=10) as client:
        await client.list_models()
        await client.list_models()
        with pytest.raises(AIServiceError) as caught:
            await client.list_models()
    assert (
        caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "slow" in caught.value.message
    )


async def test_an_expired_key_is_refused(gateway: Gateway, admin: Admin) -> None:
    spec = KeySpec(name="brief")
    spec.expire_time.FromNanoseconds(int((time.time() + 1) * 1e9))
    secret = (await admin.CreateKey(CreateKeyRequest(spec=spec))).secret
    while True:  # works until its expiry passes, then is refused
        try:
            await models_of(gateway, secret)
        except AIServiceError as error:
            assert error.code is grpc.StatusCode.UNAUTHENTICATED
            assert "expired" in error.message
            break
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("key", [TEST_KEY, RESTRICTED_KEY])
async def test_a_caller_without_an_admin_role_is_permission_denied(
    gateway: Gateway, key: str
) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = Admin(ai_service_pb2_grpc.AdminStub(channel), key)
        for call in (
            stub.CreateKey(CreateKeyRequest(spec=KeySpec(name="x"))),
            stub.ListKeys(ListKeysRequest()),
            stub.RevokeKey(RevokeKeyRequest(id="x")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "admin role" in (caught.value.details() or "")


async def test_the_admin_service_needs_credentials(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ai_service_pb2_grpc.AdminStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListKeys(ListKeysRequest(), timeout=10)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("spec", "code", "text"),
    [
        (KeySpec(name=""), grpc.StatusCode.INVALID_ARGUMENT, "spec.name"),
        (KeySpec(name="x", models=["nope"]), grpc.StatusCode.INVALID_ARGUMENT, "spec.models"),
        (KeySpec(name="x", roles=["nope"]), grpc.StatusCode.INVALID_ARGUMENT, "spec.roles"),
        (KeySpec(name="tester"), grpc.StatusCode.ALREADY_EXISTS, "tester"),
    ],
)
async def test_a_bad_spec_is_refused_naming_the_field(
    admin: Admin, spec: KeySpec, code: grpc.StatusCode, text: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.CreateKey(CreateKeyRequest(spec=spec))
    assert caught.value.code() is code and text in (caught.value.details() or "")


async def test_unknown_ids_are_not_found(admin: Admin) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.RevokeKey(RevokeKeyRequest(id="0000"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_with_issued_keys_off_the_admin_service_says_so(start_gateway: StartGateway) -> None:
    gateway = await admin_gateway(start_gateway, auth__virtual_keys={"enabled": False})
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = Admin(ai_service_pb2_grpc.AdminStub(channel), ADMIN_KEY)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListKeys(ListKeysRequest())
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
