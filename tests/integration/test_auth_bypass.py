"""No way around authentication: every RPC, every credential trick.

Health and reflection are deliberately open (load balancers and grpcurl need them);
reflection describes only the public contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ai_service.runtime.gateway import Gateway
from ai_service.simulator import Simulator
from ai_service_protos import ai_service_pb2_grpc
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest, ListModelsRequest, Message
from tests.conftest import RESTRICTED_KEY, TEST_KEY

HELLO = ChatCompletionRequest(model="sim-gpt", messages=[Message(role="user", content="hello")])
OTHER = ChatCompletionRequest(model="sim-other", messages=[Message(role="user", content="hello")])

Metadata = list[tuple[str, Any]]


def rpcs(stub: Any) -> dict[str, Callable[[Metadata], Any]]:
    return {
        "ChatCompletion": lambda md: stub.ChatCompletion(HELLO, metadata=md, timeout=5),
        "StreamChatCompletion": lambda md: _drain(
            stub.StreamChatCompletion(HELLO, metadata=md, timeout=5)
        ),
        "ListModels": lambda md: stub.ListModels(ListModelsRequest(), metadata=md, timeout=5),
    }


async def _outcome(call: Callable[[Metadata], Any], metadata: Metadata) -> grpc.StatusCode:
    try:
        result = call(metadata)
        await result
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


REFUSED = [
    pytest.param([], id="no-key"),
    pytest.param([("authorization", "Bearer not-a-key")], id="wrong-key"),
    pytest.param([("authorization", f"Basic {TEST_KEY}")], id="wrong-scheme"),
    pytest.param([("authorization", TEST_KEY)], id="no-scheme"),
    pytest.param([("authorization", f"Bearer {TEST_KEY} extra")], id="trailing-junk"),
    pytest.param([("authorization", f"Bearer {TEST_KEY[:-1]}")], id="prefix-of-a-key"),
    pytest.param([("authorization", f"Bearer {TEST_KEY}x")], id="key-plus-one"),
    pytest.param([("authorization", f"Bearer {TEST_KEY.upper()}")], id="key-case-changed"),
    pytest.param([("authorization", "Bearer "), ("x-api-key", "")], id="empty-values"),
    pytest.param(
        [("authorization", f"Bearer {TEST_KEY}"), ("authorization", "Bearer not-a-key")],
        id="duplicate-headers-one-bad",
    ),
    pytest.param(
        [("authorization", f"Bearer {RESTRICTED_KEY}"), ("x-api-key", TEST_KEY)],
        id="two-different-keys",
    ),
    pytest.param([("authorization-bin", TEST_KEY.encode())], id="binary-header"),
    pytest.param([("x-api-key-bin", TEST_KEY.encode())], id="binary-api-key"),
]


@pytest.mark.parametrize("metadata", REFUSED)
async def test_every_rpc_refuses_bad_credentials_without_an_upstream_call(
    gateway: Gateway, simulator: Simulator, metadata: Metadata
) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        for name, call in rpcs(stub).items():
            assert await _outcome(call, metadata) is grpc.StatusCode.UNAUTHENTICATED, name
    assert simulator.stats.total_requests == 0


ACCEPTED = [
    pytest.param([("authorization", f"Bearer {TEST_KEY}")], id="bearer"),
    pytest.param([("authorization", f"bearer {TEST_KEY}")], id="scheme-lower-case"),
    pytest.param([("authorization", f"BEARER {TEST_KEY}")], id="scheme-upper-case"),
    pytest.param([("authorization", f"  Bearer   {TEST_KEY}  ")], id="surrounding-spaces"),
    pytest.param([("x-api-key", TEST_KEY)], id="x-api-key"),
    pytest.param(
        [("authorization", f"Bearer {TEST_KEY}"), ("authorization", f"Bearer {TEST_KEY}")],
        id="same-key-twice",
    ),
]


@pytest.mark.parametrize("metadata", ACCEPTED)
async def test_the_right_key_is_accepted_however_it_is_written(
    gateway: Gateway, metadata: Metadata
) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        for name, call in rpcs(stub).items():
            assert await _outcome(call, metadata) is grpc.StatusCode.OK, name


async def test_a_key_for_another_model_is_denied_on_every_chat_rpc(
    gateway: Gateway, simulator: Simulator
) -> None:
    metadata = [("authorization", f"Bearer {RESTRICTED_KEY}")]
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = ai_service_pb2_grpc.AIServiceStub(channel)
        for call in (
            lambda: stub.ChatCompletion(OTHER, metadata=metadata, timeout=5),
            lambda: _drain(stub.StreamChatCompletion(OTHER, metadata=metadata, timeout=5)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call()
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        models = await stub.ListModels(ListModelsRequest(), metadata=metadata, timeout=5)
    assert [m.id for m in models.models] == ["sim-gpt"]
    assert simulator.stats.total_requests == 0


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def test_reflection_is_open_and_shows_only_the_public_contract(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="ai_service.v1.AIService"
            ),
        ]
        replies = [r async for r in stub.ServerReflectionInfo(iter(requests))]
    services = {s.name for s in replies[0].list_services_response.service}
    assert services == {
        "ai_service.v1.AIService",
        "ai_service.v1.Admin",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    described = b"".join(replies[1].file_descriptor_response.file_descriptor_proto)
    assert TEST_KEY.encode() not in described and b"sk-" not in described
