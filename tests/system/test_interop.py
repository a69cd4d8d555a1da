"""Clients in other languages and tools, and gRPC-native retries from the service config.

- The Node.js example (`client/examples/node/chat.js`, @grpc/grpc-js from the same
  .proto) against a real in-process gateway: unary, stream, a bad key.
- An app written against OpenAI's Node SDK (`client/examples/node-openai/chat.mjs`, the
  `openai` npm package) pointed at the gateway's HTTP door: a streamed call, a bad key.
- `client/service_config.json`: a small in-test `grpc.aio` AIService answers
  UNAVAILABLE to the first attempt of a call and counts attempts server-side, so a
  retry seen there was made by the client's gRPC channel, not by any code of ours.
- The real grpcurl binary's health checks against the gateway.

Children run with `asyncio.create_subprocess_exec`: the gateway serves on this test's
event loop, which must keep running while a child talks to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from ai_service.runtime.gateway import Gateway
from ai_service.simulator import plan_reply
from ai_service_client import AIServiceError, AsyncAIClient, build_chat_request
from ai_service_client._service_config import DEFAULT_SERVICE_CONFIG
from ai_service_protos import ai_service_pb2, ai_service_pb2_grpc
from tests.conftest import REPO, TEST_KEY, StartGateway

NODE_DIR = REPO / "client" / "examples" / "node"
NODE_OPENAI_DIR = REPO / "client" / "examples" / "node-openai"
GRPCURL = Path(sys.executable).parent / "grpcurl"
SERVICE = "ai_service.v1.AIService"
CHILD_TIMEOUT = 30.0  # seconds for one child process (node, grpcurl) on a loaded machine
NPM_TIMEOUT = 240.0  # a first `npm ci` downloads the packages
USAGE_LINE = re.compile(r"^usage: prompt=(\d+) completion=(\d+) total=(\d+)$")
_AMBIENT = ("AI_SERVICE_ADDR", "AI_SERVICE_KEY", "AI_SERVICE_MODEL")


# --- child processes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        output = f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        return f"{self.argv} exited {self.returncode}\n{output}"


async def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> Finished:
    """Run a child to completion without blocking the loop that serves the gateway."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), CHILD_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{argv} still running after {CHILD_TIMEOUT}s")
    assert process.returncode is not None
    return Finished(argv, process.returncode, stdout.decode(), stderr.decode())


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _AMBIENT}
    env.update(extra)
    return env


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Node.js 18+ and npm run client/examples/node)"
        if os.environ.get("AI_SERVICE_REQUIRE_SERVERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def npm_ci(directory: Path, installed: Path) -> str:
    """The `node` binary, with `directory`'s dependencies installed (`npm ci` once, from
    its committed package-lock.json) unless `installed` is there already."""
    node = require_tool("node")
    npm = require_tool("npm")
    if not installed.is_dir():
        try:
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=directory,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"npm ci in {directory} did not finish in {NPM_TIMEOUT}s")
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    return node


@pytest.fixture(scope="module")
def node() -> str:
    """The `node` binary, with the gRPC example's dependencies installed."""
    return npm_ci(NODE_DIR, NODE_DIR / "node_modules" / "@grpc" / "grpc-js")


@pytest.fixture(scope="module")
def node_openai() -> str:
    """The `node` binary, with OpenAI's Node SDK installed for the HTTP door's example."""
    return npm_ci(NODE_OPENAI_DIR, NODE_OPENAI_DIR / "node_modules" / "openai")


async def chat_js(node: str, address: str, key: str, *args: str) -> Finished:
    env = child_env(AI_SERVICE_ADDR=address, AI_SERVICE_KEY=key)
    return await run([node, "chat.js", *args], cwd=NODE_DIR, env=env)


def usage_of(result: Finished) -> tuple[int, int, int]:
    (line,) = result.stderr.splitlines()
    match = USAGE_LINE.match(line)
    assert match, result
    prompt, completion, total = (int(group) for group in match.groups())
    return prompt, completion, total


# --- the Node.js client -------------------------------------------------------------------


@pytest.mark.timeout(NPM_TIMEOUT + 60)
async def test_node_client_unary_answers_like_the_python_client(
    node: str, gateway: Gateway, client: AsyncAIClient
) -> None:
    # No --model: chat.js asks ListModels and takes the first model (sim-gpt).
    result = await chat_js(node, gateway.address, TEST_KEY, "hello from node")
    assert result.returncode == 0, result
    assert result.stdout == "You said: hello from node\n"

    expected = await client.chat(build_chat_request("hello from node", model="sim-gpt"))
    assert usage_of(result) == (
        expected.usage.prompt_tokens,
        expected.usage.completion_tokens,
        expected.usage.total_tokens,
    )


@pytest.mark.timeout(NPM_TIMEOUT + 60)
async def test_node_client_streams_every_token(node: str, gateway: Gateway) -> None:
    prompt = "/tokens 12 stream"
    expected = plan_reply({"messages": [{"role": "user", "content": prompt}]})
    assert expected.text is not None

    result = await chat_js(
        node, gateway.address, TEST_KEY, prompt, "--model", "sim-gpt", "--stream"
    )
    assert result.returncode == 0, result
    assert result.stdout == expected.text + "\n"
    prompt_tokens, completion, total = usage_of(result)
    assert completion == 12
    assert prompt_tokens == expected.prompt_tokens
    assert total == prompt_tokens + completion


@pytest.mark.timeout(NPM_TIMEOUT + 60)
async def test_node_client_bad_key_prints_one_error_line(node: str, gateway: Gateway) -> None:
    result = await chat_js(node, gateway.address, "not-the-key", "hi", "--model", "sim-gpt")
    assert result.returncode == 1, result
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: UNAUTHENTICATED: "), line
    assert "not-the-key" not in line


# --- OpenAI's Node SDK through the HTTP door ------------------------------------------------


async def chat_mjs(node: str, gateway: Gateway, key: str, *args: str) -> Finished:
    """The example as an existing app runs it: two settings point it at the gateway."""
    assert gateway.http_address is not None
    env = child_env(OPENAI_BASE_URL=f"http://{gateway.http_address}/v1", OPENAI_API_KEY=key)
    return await run([node, "chat.mjs", *args], cwd=NODE_OPENAI_DIR, env=env)


@pytest.mark.timeout(NPM_TIMEOUT + 60)
async def test_openais_node_sdk_streams_through_the_http_door(
    node_openai: str, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(server__http={"listen": "127.0.0.1:0"})
    prompt = "/tokens 12 stream"
    expected = plan_reply({"messages": [{"role": "user", "content": prompt}]})
    result = await chat_mjs(node_openai, gateway, TEST_KEY, prompt, "--model", "sim-gpt")
    assert result.returncode == 0, result
    assert result.stdout == f"{expected.text}\n"
    assert usage_of(result) == (expected.prompt_tokens, 12, expected.prompt_tokens + 12)

    refused = await chat_mjs(node_openai, gateway, "not-the-key", "hi")
    assert refused.returncode == 1, refused
    (line,) = refused.stderr.splitlines()
    assert line.startswith("error: 401 AuthenticationError: "), line
    assert "not-the-key" not in line


# --- gRPC-native retries from client/service_config.json -----------------------------------


class FlakyAIService(ai_service_pb2_grpc.AIServiceServicer):  # type: ignore[misc]
    """Fails the first `failures` attempts of each RPC with UNAVAILABLE, then answers.

    Records, per attempt, the `grpc-previous-rpc-attempts` header gRPC puts on a retry.
    """

    def __init__(self, failures: int = 1, chunks_before_failing: int = 0) -> None:
        self.failures = failures
        self.chunks_before_failing = chunks_before_failing
        self.attempts: dict[str, list[str | None]] = {"chat": [], "stream": []}

    def _attempt(self, rpc: str, context: grpc.aio.ServicerContext[Any, Any]) -> bool:
        """Record this attempt; True when it should fail."""
        previous = dict(context.invocation_metadata() or ()).get("grpc-previous-rpc-attempts")
        self.attempts[rpc].append(str(previous) if previous is not None else None)
        return len(self.attempts[rpc]) <= self.failures

    async def ChatCompletion(
        self,
        request: ai_service_pb2.ChatCompletionRequest,
        context: grpc.aio.ServicerContext[
            ai_service_pb2.ChatCompletionRequest, ai_service_pb2.ChatCompletionResponse
        ],
    ) -> ai_service_pb2.ChatCompletionResponse:
        if self._attempt("chat", context):
            await context.abort(grpc.StatusCode.UNAVAILABLE, "gateway restarting")
        answer = ai_service_pb2.Message(role="assistant", content="retried fine")
        return ai_service_pb2.ChatCompletionResponse(
            choices=[ai_service_pb2.Choice(message=answer, finish_reason="stop")]
        )

    async def StreamChatCompletion(
        self,
        request: ai_service_pb2.ChatCompletionRequest,
        context: grpc.aio.ServicerContext[
            ai_service_pb2.ChatCompletionRequest, ai_service_pb2.ChatCompletionChunk
        ],
    ) -> AsyncIterator[ai_service_pb2.ChatCompletionChunk]:
        fail = self._attempt("stream", context)
        for sequence, word in enumerate(["one ", "two ", "three"]):
            if fail and sequence == self.chunks_before_failing:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "gateway restarting")
            delta = ai_service_pb2.Delta(content=word)
            yield ai_service_pb2.ChatCompletionChunk(
                sequence=sequence, choices=[ai_service_pb2.ChunkChoice(delta=delta)]
            )


@dataclass
class Flaky:
    address: str
    service: FlakyAIService


async def start_flaky(service: FlakyAIService) -> AsyncIterator[Flaky]:
    server = grpc.aio.server()
    ai_service_pb2_grpc.add_AIServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield Flaky(f"127.0.0.1:{port}", service)
    finally:
        await server.stop(None)


@pytest.fixture
async def flaky() -> AsyncIterator[Flaky]:
    async for running in start_flaky(FlakyAIService()):
        yield running


@pytest.fixture
async def flaky_mid_stream() -> AsyncIterator[Flaky]:
    async for running in start_flaky(FlakyAIService(chunks_before_failing=1)):
        yield running


def test_service_config_names_the_methods_of_the_proto() -> None:
    # A renamed method would silently lose its retry policy and deadline.
    config = json.loads(DEFAULT_SERVICE_CONFIG)
    assert (REPO / "client" / "service_config.json").read_text("utf-8") == DEFAULT_SERVICE_CONFIG
    methods = ai_service_pb2.DESCRIPTOR.services_by_name["AIService"].methods_by_name
    named = {name["method"]: entry for entry in config["methodConfig"] for name in entry["name"]}
    assert {name["service"] for e in config["methodConfig"] for name in e["name"]} == {SERVICE}
    assert set(named) == set(methods)
    for method in ("ChatCompletion", "ListModels"):
        policy = named[method]["retryPolicy"]
        assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
        assert policy["maxAttempts"] == 3
    assert named["ChatCompletion"]["timeout"] == "60s"
    assert named["StreamChatCompletion"]["timeout"] == "600s"


async def test_default_service_config_retries_unavailable(flaky: Flaky) -> None:
    async with AsyncAIClient(flaky.address, TEST_KEY, timeout=10) as ai:
        assert await ai.ask("hi", model="any") == "retried fine"
    # Two attempts reached the server; the second was marked as a retry by gRPC itself.
    assert flaky.service.attempts["chat"] == [None, "1"]


async def test_without_a_service_config_unavailable_is_not_retried(flaky: Flaky) -> None:
    async with AsyncAIClient(flaky.address, TEST_KEY, timeout=10, service_config="") as ai:
        with pytest.raises(AIServiceError) as caught:
            await ai.ask("hi", model="any")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert flaky.service.attempts["chat"] == [None]


async def test_a_stream_is_retried_before_its_first_chunk(flaky: Flaky) -> None:
    async with AsyncAIClient(flaky.address, TEST_KEY, timeout=10) as ai:
        chunks = [chunk async for chunk in ai.stream_chat(build_chat_request("hi", model="x"))]
    assert "".join(c.choices[0].delta.content for c in chunks) == "one two three"
    assert flaky.service.attempts["stream"] == [None, "1"]


async def test_a_stream_is_not_retried_after_its_first_chunk(flaky_mid_stream: Flaky) -> None:
    received: list[str] = []
    async with AsyncAIClient(flaky_mid_stream.address, TEST_KEY, timeout=10) as ai:
        with pytest.raises(AIServiceError) as caught:
            async for chunk in ai.stream_chat(build_chat_request("hi", model="x")):
                received.append(chunk.choices[0].delta.content)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert received == ["one "]  # never a duplicated prefix
    assert flaky_mid_stream.service.attempts["stream"] == [None]


@pytest.mark.timeout(NPM_TIMEOUT + 60)
async def test_node_client_retries_from_the_same_service_config(node: str, flaky: Flaky) -> None:
    result = await chat_js(node, flaky.address, TEST_KEY, "hi", "--model", "any")
    assert result.returncode == 0, result
    assert result.stdout == "retried fine\n"
    assert flaky.service.attempts["chat"] == [None, "1"]


# --- grpcurl ------------------------------------------------------------------------------


async def test_grpcurl_health_check(gateway: Gateway) -> None:
    base = [str(GRPCURL), "-plaintext"]
    target = [gateway.address, "grpc.health.v1.Health/Check"]
    for argv in (
        [*base, *target],
        [*base, "-d", json.dumps({"service": SERVICE}), *target],
    ):
        result = await run(argv, cwd=REPO)
        assert result.returncode == 0, result
        assert json.loads(result.stdout) == {"status": "SERVING"}
