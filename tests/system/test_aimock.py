"""The cloud adapters against a third-party implementation of the clouds' APIs: aimock
(@copilotkit/aimock, an npm package, installed here by `npm ci` from the committed lock in
tests/system/aimock/), run as its own process on loopback with tests/system/aimock/
fixtures.json. Nobody here wrote it, so it checks the adapters against someone else's
reading of the same references.

What aimock serves and these tests check, through the real gateway: Azure OpenAI at both URL
forms (unary, streamed, tool calls and their results, embeddings, a 429), the Gemini API
(`v1beta` generateContent and streamGenerateContent, tool calls, a 429), Vertex AI's Gemini
(with a real OAuth token from the simulator's Google token endpoint: aimock checks none), and
Bedrock's Converse (unary and tool calls) and ConverseStream. aimock's ConverseStream opens
text blocks with `contentBlockStart {"start": {}}`, which botocore refuses ("must have one
and only one member set") and the gateway's adapter reads as the no-op it is.

What aimock cannot check (its gaps, not the adapters'): Azure's content-filter annotations
and errors, Gemini's `batchEmbedContents` (no route) and thought signatures, Vertex's Claude
(`rawPredict`) and `predict` embeddings, Bedrock's Titan and Cohere embedding bodies, any
credential (no key, token or signature is verified), and cache or reasoning usage. The
simulator's tests cover those.

Without node and npm the tests skip, or fail under AI_SERVICE_REQUIRE_SERVERS=1.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from ai_service.config import parse_config
from ai_service.simulator import Simulator
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionRequest, Message
from ai_service_protos.ai_service_pb2 import EmbedRequest, ToolChoice
from tests.clouds import CLOUD_ENV, service_account_file
from tests.conftest import PROVIDER_KEY_REF, REPO, TEST_KEY, StartGateway, free_port
from tests.integration.test_provider_e2e import WEATHER
from tests.processes import Process, spawn, wait_http
from tests.servers import missing, require

AIMOCK_DIR = REPO / "tests" / "system" / "aimock"
CLI = AIMOCK_DIR / "node_modules" / "@copilotkit" / "aimock" / "dist" / "cli.js"
NPM_TIMEOUT = 240.0
GREETING = "Hello from aimock, a server nobody here wrote."
MODELS = {
    "azure": ("azure", "gpt-4o-deployment"),
    "azure-v1": ("azure-v1", "gpt-4o-deployment"),
    "gemini": ("gemini", "gemini-2.5-flash"),
    "vertex": ("vertex", "gemini-2.5-pro"),
    "bedrock": ("bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0"),
}
each_model = pytest.mark.parametrize("model", list(MODELS))


@pytest.fixture(scope="module")
def aimock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """aimock on a free loopback port, its fixtures loaded; its base URL."""
    node, npm = require("node"), require("npm")
    if not CLI.exists():
        try:
            installed = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=AIMOCK_DIR,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            missing(f"npm ci in {AIMOCK_DIR} did not finish in {NPM_TIMEOUT}s")
        if installed.returncode != 0:
            missing(f"npm ci in {AIMOCK_DIR} failed:\n{installed.stdout}\n{installed.stderr}")
    port = free_port()
    process: Process = spawn(
        [
            node,
            str(CLI),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-f",
            str(AIMOCK_DIR / "fixtures.json"),
            "--log-level",
            "warn",
        ],
        tmp_path_factory.mktemp("aimock"),
        "aimock",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()


@pytest.fixture
async def ai(aimock: str, start_gateway: StartGateway, simulator: Simulator, tmp_path: Path) -> Any:
    credentials = service_account_file(tmp_path, simulator)  # tokens from the simulator
    providers = [
        {"name": "azure", "kind": "azure_openai", "base_url": aimock, "api_key": PROVIDER_KEY_REF},
        {
            "name": "azure-v1",
            "kind": "azure_openai",
            "base_url": aimock,
            "api_key": PROVIDER_KEY_REF,
            "azure_openai": {"api_version": "v1"},
        },
        {"name": "gemini", "kind": "gemini", "base_url": aimock, "api_key": PROVIDER_KEY_REF},
        {
            "name": "vertex",
            "kind": "vertex",
            "base_url": aimock,
            "vertex": {
                "project": "p",
                "location": "us-central1",
                "credentials_file": str(credentials),
            },
        },
        {
            "name": "bedrock",
            "kind": "bedrock",
            "base_url": aimock,
            "bedrock": {
                "region": "us-east-1",
                "access_key_id": "${AI_SERVICE_TEST_AWS_KEY_ID}",
                "secret_access_key": PROVIDER_KEY_REF,
            },
        },
    ]
    models = [
        {"name": name, "provider": provider, "upstream_model": upstream}
        for name, (provider, upstream) in MODELS.items()
    ]
    models.append(
        {
            "name": "azure-embed",
            "provider": "azure",
            "upstream_model": "embedding-deployment",
            "capabilities": {"embeddings": True},
        }
    )
    tree = {
        "server": {"listen": "127.0.0.1:0"},
        "auth": {"keys": [{"name": "tester", "key": TEST_KEY}]},
        "providers": providers,
        "models": models,
        "resilience": {"retries": {"max_attempts": 1}},
    }
    gateway = await start_gateway(parse_config(tree, env=CLOUD_ENV))
    async with AsyncAIClient(gateway.address, TEST_KEY, timeout=20) as client:
        yield client


def ask(model: str, text: str, **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model=model, messages=[Message(role="user", content=text)], **fields
    )


@each_model
async def test_a_unary_answer_from_aimock(ai: AsyncAIClient, model: str) -> None:
    response = await ai.chat(ask(model, "hello"))
    assert response.choices[0].message.content == GREETING
    assert response.choices[0].finish_reason == "stop"


@each_model
async def test_a_streamed_answer_from_aimock_says_the_same(ai: AsyncAIClient, model: str) -> None:
    chunks = [chunk async for chunk in ai.stream_chat(ask(model, "hello"))]
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == GREETING
    assert chunks[-1].choices[0].finish_reason == "stop"


@each_model
async def test_a_tool_call_and_its_result_with_aimock(ai: AsyncAIClient, model: str) -> None:
    request = ask(model, "weather please", tools=[WEATHER], tool_choice=ToolChoice(mode="auto"))
    response = await ai.chat(request)
    (call,) = response.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id
    request.messages.append(response.choices[0].message)
    request.messages.append(Message(role="tool", tool_call_id=call.id, content="sunny"))
    answer = await ai.chat(request)
    assert answer.choices[0].message.content == "The tool said it is sunny."


@pytest.mark.parametrize("model", ["azure", "gemini", "bedrock"])
async def test_aimocks_rate_limit_is_resource_exhausted(ai: AsyncAIClient, model: str) -> None:
    with pytest.raises(AIServiceError) as caught:
        await ai.chat(ask(model, "rate limit me"))
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Rate limited by aimock" in caught.value.message


async def test_azure_embeddings_from_aimock(ai: AsyncAIClient) -> None:
    response = await ai.embed(EmbedRequest(model="azure-embed", inputs=["alpha", "beta"]))
    assert [e.index for e in response.embeddings] == [0, 1]
    assert all(len(e.values) > 0 for e in response.embeddings)
