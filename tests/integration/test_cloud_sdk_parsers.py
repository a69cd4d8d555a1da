"""The official SDKs of the clouds, pointed at the simulator, parse what it answers and sign
or authenticate as its checks expect: boto3's bedrock-runtime client (SigV4, Converse,
ConverseStream's event stream and its exceptions, InvokeModel embeddings), google-genai
(the Gemini API and Vertex AI, with a service account whose token the simulator issues),
and openai's AzureOpenAI (deployment URLs and the v1 API, filters, embeddings).

Software nobody here wrote reads the simulator's bytes: if the simulator drifted from the
wire formats, these would fail where the gateway's own adapters might agree with it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai_service.simulator import FaultRule, Simulator, SimulatorConfig
from tests.clouds import SERVICE_ACCOUNT, TENANT, service_account_file
from tests.integration.test_content import PDF, PNG

boto3 = pytest.importorskip("boto3")
genai = pytest.importorskip("google.genai")
openai = pytest.importorskip("openai")

from botocore.config import Config  # noqa: E402 (after the skip: boto3 brings botocore)
from botocore.exceptions import ClientError, EventStreamError  # noqa: E402
from google.genai import errors as genai_errors  # noqa: E402
from google.genai import types as genai_types  # noqa: E402

KEY = "sim-cloud-key-0123456789"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(api_key=KEY)) as simulator:
        yield simulator


# --- boto3: bedrock-runtime ---------------------------------------------------------------


@pytest.fixture
def bedrock(sim: Simulator) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=sim.base_url,
        aws_access_key_id="AKIDBOTO3TEST",
        aws_secret_access_key=KEY,
        config=Config(retries={"max_attempts": 1}),
    )


async def test_boto3_converse_with_an_image_a_document_and_signed_reasoning(bedrock: Any) -> None:
    response = await asyncio.to_thread(
        bedrock.converse,
        modelId="anthropic.claude-sim-v1:0",
        system=[{"text": "be brief"}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"text": "Describe"},
                    {"image": {"format": "png", "source": {"bytes": PNG}}},
                    {"document": {"format": "pdf", "name": "notes", "source": {"bytes": PDF}}},
                ],
            }
        ],
        inferenceConfig={"maxTokens": 4096},
        additionalModelRequestFields={"thinking": {"type": "enabled", "budget_tokens": 1024}},
    )
    reasoning, answer = response["output"]["message"]["content"]
    assert reasoning["reasoningContent"]["reasoningText"]["signature"]
    assert answer["text"] == (
        f"You said: Describe You sent 1 image (image/png, {len(PNG)} bytes) and 1 document "
        f'(application/pdf, {len(PDF)} bytes, "notes").'
    )
    assert response["stopReason"] == "end_turn"
    usage = response["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]


async def test_boto3_reads_the_event_stream_of_a_tool_call_and_reasoning(bedrock: Any) -> None:
    response = await asyncio.to_thread(
        bedrock.converse_stream,
        modelId="anthropic.claude-sim-v1:0",
        messages=[{"role": "user", "content": [{"text": "weather in city Oslo"}]}],
        toolConfig={
            "tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": WEATHER_SCHEMA}}}]
        },
        additionalModelRequestFields={"thinking": {"type": "enabled", "budget_tokens": 1024}},
    )
    events = await asyncio.to_thread(list, response["stream"])
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    thinking = [
        e["contentBlockDelta"]["delta"]["reasoningContent"]
        for e in events
        if "reasoningContent" in e.get("contentBlockDelta", {}).get("delta", {})
    ]
    assert "".join(d.get("text", "") for d in thinking).startswith("Reasoning: ")
    assert any("signature" in d for d in thinking)
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "weather"
    pieces = [
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "toolUse" in e.get("contentBlockDelta", {}).get("delta", {})
    ]
    assert "".join(pieces) == '{"city":"Oslo"}'
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"


async def test_boto3_raises_the_exception_that_arrives_mid_stream(
    bedrock: Any, sim: Simulator
) -> None:
    sim.add_fault(FaultRule("stream_error", status=429, after_chunks=2))
    response = await asyncio.to_thread(
        bedrock.converse_stream,
        modelId="m",
        messages=[{"role": "user", "content": [{"text": "/tokens 10 go"}]}],
    )
    with pytest.raises(EventStreamError) as caught:
        await asyncio.to_thread(list, response["stream"])
    assert caught.value.response["Error"]["Code"] == "throttlingException"


async def test_boto3_errors_carry_their_exception_name(bedrock: Any, sim: Simulator) -> None:
    sim.add_fault(FaultRule("status", status=400, message="bad input", times=1))
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(
            bedrock.converse, modelId="m", messages=[{"role": "user", "content": [{"text": "x"}]}]
        )
    assert caught.value.response["Error"] == {"Code": "ValidationException", "Message": "bad input"}
    wrong = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=sim.base_url,
        aws_access_key_id="AKIDBOTO3TEST",
        aws_secret_access_key="not-the-secret",
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(
            wrong.converse, modelId="m", messages=[{"role": "user", "content": [{"text": "x"}]}]
        )
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"


async def test_boto3_invokes_the_embedding_models(bedrock: Any) -> None:
    titan = await asyncio.to_thread(
        bedrock.invoke_model,
        modelId="amazon.titan-embed-text-v2:0",
        body=json.dumps({"inputText": "alpha beta", "dimensions": 256}),
    )
    answer = json.loads(titan["body"].read())
    assert len(answer["embedding"]) == 256 and answer["inputTextTokenCount"] == 2
    cohere = await asyncio.to_thread(
        bedrock.invoke_model,
        modelId="cohere.embed-english-v3",
        body=json.dumps(
            {"texts": ["a", "b"], "input_type": "search_document", "embedding_types": ["float"]}
        ),
    )
    assert len(json.loads(cohere["body"].read())["embeddings"]["float"]) == 2


# --- google-genai: the Gemini API and Vertex AI -------------------------------------------


@pytest.fixture
def gemini(sim: Simulator) -> Any:
    options = genai_types.HttpOptions(base_url=sim.base_url, api_version="v1beta")
    return genai.Client(api_key=KEY, http_options=options)


async def test_genai_parses_text_media_thoughts_and_usage(gemini: Any) -> None:
    config = genai_types.GenerateContentConfig(
        system_instruction="be brief",
        thinking_config=genai_types.ThinkingConfig(thinking_budget=1024, include_thoughts=True),
    )
    contents = [
        genai_types.Part.from_text(text="Describe"),
        genai_types.Part.from_bytes(data=PNG, mime_type="image/png"),
    ]
    response = await gemini.aio.models.generate_content(
        model="gemini-sim", contents=contents, config=config
    )
    thought, answer = response.candidates[0].content.parts
    assert thought.thought and thought.thought_signature
    assert answer.text == f"You said: Describe You sent 1 image (image/png, {len(PNG)} bytes)."
    usage = response.usage_metadata
    assert usage.thoughts_token_count == 9
    assert usage.total_token_count == (
        usage.prompt_token_count + usage.candidates_token_count + usage.thoughts_token_count
    )
    assert response.candidates[0].finish_reason == genai_types.FinishReason.STOP


async def test_genai_streams_and_calls_functions(gemini: Any) -> None:
    chunks = [
        chunk
        async for chunk in await gemini.aio.models.generate_content_stream(
            model="gemini-sim", contents="one two three"
        )
    ]
    assert "".join(c.text or "" for c in chunks) == "You said: one two three"
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
    tool = genai_types.Tool(
        function_declarations=[
            genai_types.FunctionDeclaration(
                name="weather",
                parameters=genai_types.Schema(
                    type="OBJECT", properties={"city": genai_types.Schema(type="STRING")}
                ),
            )
        ]
    )
    response = await gemini.aio.models.generate_content(
        model="gemini-sim",
        contents="weather in city Rome",
        config=genai_types.GenerateContentConfig(
            tools=[tool],
            automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
        ),
    )
    (call,) = response.function_calls
    assert (call.name, call.args) == ("weather", {"city": "Rome"})


async def test_genai_embeds_through_batch_embed_contents(gemini: Any) -> None:
    response = await gemini.aio.models.embed_content(
        model="gemini-embedding-001",
        contents=["alpha", "beta"],
        config=genai_types.EmbedContentConfig(output_dimensionality=32),
    )
    assert [len(e.values) for e in response.embeddings] == [32, 32]


async def test_genai_errors_carry_the_status(gemini: Any, sim: Simulator) -> None:
    sim.add_fault(FaultRule("status", status=429, times=1))
    with pytest.raises(genai_errors.ClientError) as caught:
        await gemini.aio.models.generate_content(model="gemini-sim", contents="x")
    assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")
    options = genai_types.HttpOptions(base_url=sim.base_url, api_version="v1beta")
    wrong = genai.Client(api_key="not-the-key", http_options=options)
    with pytest.raises(genai_errors.ClientError) as refused:
        await wrong.aio.models.generate_content(model="gemini-sim", contents="x")
    assert (
        refused.value.status == "INVALID_ARGUMENT" and "API key not valid" in refused.value.message
    )


async def test_genai_on_vertex_signs_in_with_a_service_account_the_simulator_issues_for(
    sim: Simulator, tmp_path: Path
) -> None:
    from google.oauth2 import service_account

    path = service_account_file(tmp_path, sim)
    credentials = service_account.Credentials.from_service_account_file(
        str(path), scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    client = genai.Client(
        vertexai=True,
        project="sim-project",
        location="us-central1",
        credentials=credentials,
        http_options=genai_types.HttpOptions(base_url=sim.base_url, api_version="v1"),
    )
    response = await client.aio.models.generate_content(model="gemini-sim", contents="hello vertex")
    assert response.text == "You said: hello vertex"
    assert sim.credentials.issued["google"] == 1
    assert credentials.service_account_email == SERVICE_ACCOUNT


# --- openai: AzureOpenAI ----------------------------------------------------------------


@pytest.fixture
async def azure(sim: Simulator) -> AsyncIterator[Any]:
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=sim.base_url, api_key=KEY, api_version="2024-10-21", max_retries=0
    )
    yield client
    await client.close()


async def test_azure_openai_parses_answers_with_filter_results(azure: Any) -> None:
    raw = await azure.chat.completions.with_raw_response.create(
        model="gpt-4o-deployment", messages=[{"role": "user", "content": "hi there"}]
    )
    body = raw.http_response.json()
    assert body["prompt_filter_results"][0]["content_filter_results"]["jailbreak"] == {
        "filtered": False,
        "detected": False,
    }
    completion = raw.parse()
    assert completion.choices[0].message.content == "You said: hi there"
    stream = await azure.chat.completions.create(
        model="gpt-4o-deployment",
        messages=[{"role": "user", "content": "hi there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert (
        chunks[0].choices == [] and chunks[-1].usage.total_tokens == completion.usage.total_tokens
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "You said: hi there"
    )


async def test_azure_openai_reports_a_filtered_prompt_and_answer(azure: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await azure.chat.completions.create(
            model="gpt-4o-deployment", messages=[{"role": "user", "content": "/filter prompt x"}]
        )
    assert caught.value.code == "content_filter"
    assert caught.value.body["innererror"]["content_filter_result"]["jailbreak"]["filtered"]
    filtered = await azure.chat.completions.create(
        model="gpt-4o-deployment", messages=[{"role": "user", "content": "/filter answer x"}]
    )
    assert filtered.choices[0].finish_reason == "content_filter"


async def test_azure_openai_embeddings_and_entra_tokens_on_the_v1_api(sim: Simulator) -> None:
    async with httpx.AsyncClient() as http:
        granted = await http.post(
            f"{sim.base_url}/{TENANT}/oauth2/v2.0/token",
            data={
                "client_id": "c",
                "client_secret": KEY,
                "scope": "https://cognitiveservices.azure.com/.default",
                "grant_type": "client_credentials",
            },
        )
    token = granted.json()["access_token"]
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=sim.base_url,
        azure_ad_token=token,
        api_version="2024-10-21",
        max_retries=0,
    )
    embedded = await client.embeddings.create(model="embedding-deployment", input=["a b", "c"])
    assert [len(e.embedding) for e in embedded.data] == [256, 256]  # base64 by default, decoded
    await client.close()
    v1 = openai.AsyncOpenAI(base_url=f"{sim.base_url}/openai/v1/", api_key=token, max_retries=0)
    answer = await v1.chat.completions.create(
        model="gpt-4o-deployment", messages=[{"role": "user", "content": "via v1"}]
    )
    assert answer.choices[0].message.content == "You said: via v1"
    await v1.close()


async def test_the_simulators_gemini_bodies_validate_against_the_sdks_types(
    sim: Simulator,
) -> None:
    # google-genai's types forbid unknown fields: every key the simulator sends is one the
    # API defines.
    thinking = {"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}}
    tools = [
        {
            "functionDeclarations": [
                {
                    "name": "weather",
                    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
                }
            ]
        }
    ]
    vertex = "/v1/projects/p/locations/l/publishers/google/models/gemini-sim"
    async with httpx.AsyncClient(base_url=sim.base_url, headers={"x-goog-api-key": KEY}) as http:
        sim.config.api_key = None  # the Vertex path takes no key here
        bodies = [
            (await http.post(path, json=body)).json()
            for path, body in (
                (
                    "/v1beta/models/gemini-sim:generateContent",
                    {
                        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                        "generationConfig": thinking,
                    },
                ),
                (
                    "/v1beta/models/gemini-sim:generateContent",
                    {
                        "contents": [{"role": "user", "parts": [{"text": "city Rome"}]}],
                        "tools": tools,
                        "generationConfig": thinking,
                    },
                ),
                (
                    "/v1beta/models/gemini-sim:generateContent",
                    {"contents": [{"role": "user", "parts": [{"text": "/filter prompt"}]}]},
                ),
                (
                    f"{vertex}:generateContent",
                    {"contents": [{"role": "user", "parts": [{"text": "/filter answer"}]}]},
                ),
            )
        ]
        stream = await http.post(
            "/v1beta/models/gemini-sim:streamGenerateContent?alt=sse",
            json={
                "contents": [{"role": "user", "parts": [{"text": "one two"}]}],
                "generationConfig": thinking,
            },
        )
        embedded = await http.post(
            "/v1beta/models/e:batchEmbedContents",
            json={"requests": [{"model": "models/e", "content": {"parts": [{"text": "a"}]}}]},
        )
    chunks = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
    for body in [*bodies, *(json.loads(chunk) for chunk in chunks)]:
        genai_types.GenerateContentResponse.model_validate(body)
    for vector in embedded.json()["embeddings"]:
        genai_types.ContentEmbedding.model_validate(vector)
