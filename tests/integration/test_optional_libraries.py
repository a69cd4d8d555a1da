"""A gateway loads a library only when its configuration uses it.

aiohttp, httpx, httpx2, redis-py, PyJWT and cryptography each cost every worker
megabytes of memory; a gateway that uses none of them (the default `h1` client, no
Redis, no identity provider, no client certificates, no metrics port) serves calls
without importing them. Each check runs a fresh interpreter that starts the real
gateway on a loopback port and makes a call through it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from asyncio.subprocess import PIPE
from typing import Any

from ai_service.simulator import Simulator
from tests.conftest import TEST_KEY, config_tree

OPTIONAL = ("aiohttp", "httpx", "httpx2", "redis", "jwt", "cryptography")

_SERVE_ONE_CALL = """
import asyncio, json, os, sys

import grpc
import uvloop

from ai_service.config import parse_config
from ai_service.runtime.gateway import Gateway
from ai_service_protos import ai_service_pb2 as pb
from ai_service_protos import ai_service_pb2_grpc as pb_grpc


async def main() -> None:
    tree, key, optional = json.loads(sys.argv[1])
    async with Gateway(parse_config(tree, env=dict(os.environ))) as gateway:
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            answer = await pb_grpc.AIServiceStub(channel).ChatCompletion(
                pb.ChatCompletionRequest(
                    model="sim-gpt", messages=[pb.Message(role="user", content="hello")]
                ),
                metadata=[("authorization", f"Bearer {key}")],
            )
    assert answer.choices[0].message.content == "You said: hello", answer
    print(json.dumps([name for name in optional if name in sys.modules]))


uvloop.run(main())
"""


async def loaded_by(tree: dict[str, Any]) -> list[str]:
    """The optional libraries a fresh gateway process imported to serve one call (the
    simulator answers from this test's event loop, so the child is awaited, not run)."""
    argument = json.dumps([tree, TEST_KEY, OPTIONAL])
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVE_ONE_CALL, argument, stdout=PIPE, stderr=PIPE
    )
    async with asyncio.timeout(60):
        out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    loaded: list[str] = json.loads(out.decode().strip().splitlines()[-1])
    return loaded


async def test_a_gateway_that_uses_no_optional_library_loads_none(simulator: Simulator) -> None:
    tree = config_tree(simulator.base_url, observability__metrics__enabled=False)
    assert await loaded_by(tree) == []


async def test_a_gateway_loads_the_http_client_its_provider_names(simulator: Simulator) -> None:
    tree = config_tree(simulator.base_url, observability__metrics__enabled=False)
    tree["providers"][0]["http_client"] = "httpx2"
    assert await loaded_by(tree) == ["httpx2"]
