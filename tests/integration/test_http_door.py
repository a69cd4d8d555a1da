"""The HTTP door with the official SDKs: OpenAI's and Anthropic's Python packages, pointed
at a real gateway (and the real simulator behind it) with a gateway key, as an existing
app would be (base URL and key, nothing else).

Conformance: unary, streaming, tools, an image, usage, embeddings, the model list, and
each error class raised as the SDK's own exception type. One pipeline: a key's request
limit spent half through each door; a caller who closes the connection cancels the
upstream request; a stream that fails after its first event ends with the API's own
error event and never with `[DONE]` or `message_stop`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import grpc
import httpx
import openai
import orjson
import pytest

from ai_service.runtime.gateway import Gateway
from ai_service.simulator import FaultRule, Simulator, plan_reply
from ai_service_client import AsyncAIClient, RateLimitError, build_chat_request
from tests.conftest import PROVIDER_KEY_REF, RESTRICTED_KEY, TEST_KEY, StartGateway, until
from tests.integration.test_observability import scrape, value

LIMITED_KEY = "limited-key-0123456789"
# The smallest real PNG: a 1x1 transparent pixel.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def door_overrides(simulator: Simulator, **more: Any) -> dict[str, Any]:
    """The test config with an HTTP door, an Anthropic model and an embedding model."""
    overrides: dict[str, Any] = {
        "server__http": {"listen": "127.0.0.1:0"},
        "providers": [
            {
                "name": "simulator",
                "kind": "openai",
                "base_url": f"{simulator.base_url}/v1",
                "api_key": PROVIDER_KEY_REF,
            },
            {
                "name": "simulator-anthropic",
                "kind": "anthropic",
                "base_url": simulator.base_url,
                "api_key": PROVIDER_KEY_REF,
            },
        ],
        "models": [
            {"name": "sim-gpt", "provider": "simulator", "upstream_model": "sim-gpt-1"},
            {"name": "sim-other", "provider": "simulator", "upstream_model": "sim-other-1"},
            {
                "name": "sim-claude",
                "provider": "simulator-anthropic",
                "upstream_model": "sim-claude-1",
            },
            {
                "name": "sim-embed",
                "provider": "simulator",
                "upstream_model": "sim-embed-1",
                "capabilities": {"embeddings": True},
            },
        ],
        "auth": {
            "keys": [
                {"name": "tester", "key": TEST_KEY},
                {"name": "restricted", "key": RESTRICTED_KEY, "models": ["sim-gpt"]},
                {
                    "name": "limited",
                    "key": LIMITED_KEY,
                    "rate_limit": {"requests_per_minute": 4, "burst": 4},
                },
            ]
        },
        "observability": {"metrics": {"listen": "127.0.0.1:0"}},
    }
    overrides.update(more)
    return overrides


@pytest.fixture
async def door(start_gateway: StartGateway, simulator: Simulator) -> Gateway:
    return await start_gateway(**door_overrides(simulator))


def base_url(gateway: Gateway) -> str:
    assert gateway.http_address is not None
    return f"http://{gateway.http_address}"


@pytest.fixture
async def oai(door: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{base_url(door)}/v1", api_key=TEST_KEY, max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def claude(door: Gateway) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=base_url(door), api_key=TEST_KEY, max_retries=0
    ) as client:
        yield client


def openai_with(gateway: Gateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base_url(gateway)}/v1", api_key=key, max_retries=0)


def anthropic_with(gateway: Gateway, key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=base_url(gateway), api_key=key, max_retries=0)


# --- OpenAI's SDK --------------------------------------------------------------------------


async def test_openai_unary_answers_with_usage_and_cost(oai: openai.AsyncOpenAI) -> None:
    raw = await oai.chat.completions.with_raw_response.create(
        model="sim-gpt", messages=[{"role": "user", "content": "hello"}]
    )
    answer = raw.parse()
    expected = plan_reply({"messages": [{"role": "user", "content": "hello"}]})
    assert answer.choices[0].message.content == "You said: hello"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.object == "chat.completion"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == expected.prompt_tokens
    assert answer.usage.completion_tokens == expected.completion_tokens
    assert answer.usage.total_tokens == expected.total_tokens
    assert raw.headers["x-request-id"]
    assert (answer.model_extra or {})["cost"]["currency"] == "USD"


async def test_openai_stream_ends_with_the_usage_chunk_and_done(
    oai: openai.AsyncOpenAI, door: Gateway
) -> None:
    prompt = "/tokens 12 stream"
    expected = plan_reply({"messages": [{"role": "user", "content": prompt}]})
    stream = await oai.chat.completions.create(
        model="sim-gpt",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.text
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    *before, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 12
    assert last.usage.prompt_tokens == expected.prompt_tokens
    assert all(c.usage is None for c in before)
    # The raw wire: one event per chunk, then [DONE].
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{base_url(door)}/v1/chat/completions",
            headers={"authorization": f"Bearer {TEST_KEY}"},
            json={
                "model": "sim-gpt",
                "stream": True,
                "messages": [{"role": "user", "content": prompt}],
            },
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(event.startswith("data: {") for event in events[:-1])
    # Without include_usage, no usage chunk and no usage field.
    assert all("usage" not in orjson.loads(event[6:]) for event in events[:-1])


async def test_openai_tools_round_trip(oai: openai.AsyncOpenAI) -> None:
    tools: Any = [{"type": "function", "function": WEATHER}]
    messages: list[Any] = [{"role": "user", "content": "weather in Paris"}]
    first = await oai.chat.completions.create(model="sim-gpt", messages=messages, tools=tools)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert "city" in orjson.loads(call.function.arguments)
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C"},
    ]
    second = await oai.chat.completions.create(model="sim-gpt", messages=messages, tools=tools)
    # The simulator answers a tool result without calling again.
    assert second.choices[0].message.content == "Tool result received: 18 C"

    stream = await oai.chat.completions.create(
        model="sim-gpt", messages=messages[:1], tools=tools, stream=True
    )
    pieces = [
        piece
        async for chunk in stream
        for piece in (chunk.choices[0].delta.tool_calls or [] if chunk.choices else [])
    ]
    assert pieces[0].id == call.id and pieces[0].function is not None
    assert pieces[0].function.name == "get_weather"
    arguments = "".join((p.function.arguments or "") for p in pieces if p.function)
    assert orjson.loads(arguments) == orjson.loads(call.function.arguments)


async def test_openai_image_by_data_url(oai: openai.AsyncOpenAI) -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    answer = await oai.chat.completions.create(
        model="sim-gpt",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )
    expected = f"You said: What is this? You sent 1 image (image/png, {len(PNG)} bytes)."
    assert answer.choices[0].message.content == expected


async def test_openai_embeddings_and_models(oai: openai.AsyncOpenAI) -> None:
    # The SDK asks for base64 unless told otherwise, and decodes it itself.
    embedded = await oai.embeddings.create(model="sim-embed", input=["one", "two words"])
    assert [item.index for item in embedded.data] == [0, 1]
    assert all(len(item.embedding) > 0 for item in embedded.data)
    assert embedded.usage.prompt_tokens > 0
    floats = await oai.embeddings.create(model="sim-embed", input="one", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(embedded.data[0].embedding, rel=1e-6)

    models = [model.id async for model in oai.models.list()]
    assert models == ["sim-gpt", "sim-other", "sim-claude", "sim-embed"]
    assert (await oai.models.retrieve("sim-claude")).owned_by == "anthropic"
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("no-such-model")


async def test_openai_errors_are_the_sdks_own_classes(door: Gateway, simulator: Simulator) -> None:
    hello: Any = [{"role": "user", "content": "hello"}]
    async with openai_with(door, "not-a-key") as client:
        with pytest.raises(openai.AuthenticationError) as refused:
            await client.chat.completions.create(model="sim-gpt", messages=hello)
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    assert refused.value.response.headers["x-request-id"]

    async with openai_with(door, TEST_KEY) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="no-such-model", messages=hello)
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="sim-gpt", messages=hello, temperature=5)
        assert bad.value.param == "temperature"
        simulator.add_fault(FaultRule("status", status=500, times=3))
        with pytest.raises(openai.InternalServerError) as failed:
            await client.chat.completions.create(model="sim-gpt", messages=hello)
        assert failed.value.status_code == 503
        # The gateway retried upstream already: the SDK is told not to.
        assert failed.value.response.headers["x-should-retry"] == "false"

    async with openai_with(door, RESTRICTED_KEY) as client:
        with pytest.raises(openai.PermissionDeniedError):
            await client.chat.completions.create(model="sim-other", messages=hello)

    async with openai_with(door, LIMITED_KEY) as client:
        for _ in range(4):
            await client.chat.completions.create(model="sim-gpt", messages=hello)
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="sim-gpt", messages=hello)
    assert limited.value.code == "rate_limit_exceeded"
    assert int(limited.value.response.headers["retry-after"]) >= 1


# --- Anthropic's SDK -----------------------------------------------------------------------


async def test_anthropic_unary_and_stream(claude: anthropic.AsyncAnthropic) -> None:
    hello: Any = [{"role": "user", "content": "hello"}]
    message = await claude.messages.create(model="sim-claude", max_tokens=100, messages=hello)
    assert message.type == "message" and message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "You said: hello"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    expected = plan_reply({"messages": hello})
    assert message.usage.input_tokens == expected.prompt_tokens
    assert message.usage.output_tokens == expected.completion_tokens

    prompt: Any = [{"role": "user", "content": "/tokens 9 go"}]
    async with claude.messages.stream(model="sim-claude", max_tokens=100, messages=prompt) as s:
        text = "".join([piece async for piece in s.text_stream])
        final = await s.get_final_message()
    assert text == plan_reply({"messages": prompt}).text
    assert final.usage.output_tokens == 9 and final.stop_reason == "end_turn"


async def test_anthropic_tools_image_and_system(claude: anthropic.AsyncAnthropic) -> None:
    tool: Any = {
        "name": WEATHER["name"],
        "description": WEATHER["description"],
        "input_schema": WEATHER["parameters"],
    }
    asked: Any = [{"role": "user", "content": "weather in Paris"}]
    first = await claude.messages.create(
        model="sim-gpt", max_tokens=100, messages=asked, tools=[tool], system="Be brief."
    )
    assert first.stop_reason == "tool_use"
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "get_weather" and "city" in use.input  # type: ignore[operator]
    answered: Any = [
        *asked,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C"}],
        },
    ]
    second = await claude.messages.create(
        model="sim-claude", max_tokens=100, messages=answered, tools=[tool]
    )
    assert second.content[0].text == "Tool result received: 18 C"  # type: ignore[union-attr]

    image: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": "image/png",
                        "data": base64.b64encode(PNG).decode(),
                    },
                },
            ],
        }
    ]
    seen = await claude.messages.create(model="sim-claude", max_tokens=100, messages=image)
    expected = f"You said: What is this? You sent 1 image (image/png, {len(PNG)} bytes)."
    assert seen.content[0].text == expected  # type: ignore[union-attr]


async def test_anthropic_thinking_comes_back_signed_and_goes_back(
    claude: anthropic.AsyncAnthropic,
) -> None:
    """Reasoning blocks cross the door byte for byte: the simulator checks the signature
    of the thinking sent back in a tool loop, as Anthropic does."""
    tool: Any = {"name": "get_weather", "input_schema": WEATHER["parameters"]}
    asked: Any = [{"role": "user", "content": "weather in Paris"}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    first = await claude.messages.create(
        model="sim-claude", max_tokens=4000, messages=asked, tools=[tool], thinking=thinking
    )
    kinds = [block.type for block in first.content]
    assert kinds[0] == "thinking" and "tool_use" in kinds
    assert first.content[0].signature  # type: ignore[union-attr]
    (use,) = [block for block in first.content if block.type == "tool_use"]
    answered: Any = [
        *asked,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "ok"}],
        },
    ]
    async with claude.messages.stream(
        model="sim-claude", max_tokens=4000, messages=answered, tools=[tool], thinking=thinking
    ) as stream:
        final = await stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].signature  # type: ignore[union-attr]
    assert final.content[1].text == "Tool result received: ok"  # type: ignore[union-attr]


async def test_anthropic_errors_are_the_sdks_own_classes(
    door: Gateway, simulator: Simulator
) -> None:
    hello: Any = [{"role": "user", "content": "hello"}]
    async with anthropic_with(door, "not-a-key") as client:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await client.messages.create(model="sim-claude", max_tokens=10, messages=hello)
    assert refused.value.response.headers["request-id"]
    async with anthropic_with(door, TEST_KEY) as client:
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(model="no-such-model", max_tokens=10, messages=hello)
        with pytest.raises(anthropic.BadRequestError):
            await client.messages.create(model="sim-claude", max_tokens=10, messages=[])
        simulator.add_fault(FaultRule("status", status=500, times=3))
        with pytest.raises(anthropic.ServiceUnavailableError) as failed:
            await client.messages.create(model="sim-claude", max_tokens=10, messages=hello)
        assert failed.value.response.headers["x-should-retry"] == "false"
    async with anthropic_with(door, RESTRICTED_KEY) as client:
        with pytest.raises(anthropic.PermissionDeniedError):
            await client.messages.create(model="sim-other", max_tokens=10, messages=hello)
    async with anthropic_with(door, LIMITED_KEY) as client:
        for _ in range(4):
            await client.messages.create(model="sim-claude", max_tokens=10, messages=hello)
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(model="sim-claude", max_tokens=10, messages=hello)
    assert int(limited.value.response.headers["retry-after"]) >= 1


# --- one pipeline --------------------------------------------------------------------------


async def test_a_keys_request_limit_is_one_over_both_doors(door: Gateway) -> None:
    """Four requests a minute: two through gRPC, two through the HTTP door; the fifth is
    refused at either door."""
    request = build_chat_request("hello", model="sim-gpt")
    async with (
        AsyncAIClient(door.address, LIMITED_KEY, timeout=10) as grpc_client,
        openai_with(door, LIMITED_KEY) as http_client,
    ):
        for _ in range(2):
            await grpc_client.chat(request)
            await http_client.chat.completions.create(
                model="sim-gpt", messages=[{"role": "user", "content": "hello"}]
            )
        with pytest.raises(openai.RateLimitError):
            await http_client.chat.completions.create(
                model="sim-gpt", messages=[{"role": "user", "content": "hello"}]
            )
        with pytest.raises(RateLimitError) as refused:
            await grpc_client.chat(request)
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    samples = await scrape(door)
    assert value(samples, "ai_gateway_requests_total", key="limited", transport="grpc") == 3
    assert value(samples, "ai_gateway_requests_total", key="limited", transport="http") == 3
    assert value(samples, "ai_gateway_requests_total", key="limited", code="OK") == 4


async def test_a_caller_who_closes_the_connection_cancels_the_upstream_stream(
    door: Gateway, simulator: Simulator
) -> None:
    simulator.config.tokens_per_second = 5  # a long answer, a word every 200 ms
    body = {
        "model": "sim-gpt",
        "stream": True,
        "messages": [{"role": "user", "content": "/tokens 100 slow"}],
    }
    async with httpx.AsyncClient() as http:
        request = http.build_request(
            "POST",
            f"{base_url(door)}/v1/chat/completions",
            headers={"authorization": f"Bearer {TEST_KEY}"},
            json=body,
        )
        response = await http.send(request, stream=True)
        lines = response.aiter_lines()
        first = await anext(lines)
        assert first.startswith("data: {")
        await response.aclose()  # the caller goes away mid-answer
    await until(lambda: bool(simulator.stats.disconnects), "the upstream stream closed", seconds=30)
    (gone,) = simulator.stats.disconnects
    assert gone.model == "sim-gpt-1" and gone.events_sent < 100
    await until(lambda: door.observability.calls.count == 0, "the call ended", seconds=30)
    samples = await scrape(door)
    assert value(samples, "ai_gateway_requests_total", code="CANCELLED", transport="http") == 1


async def test_a_caller_who_closes_the_connection_cancels_a_unary_call_upstream(
    door: Gateway, simulator: Simulator
) -> None:
    simulator.add_fault(FaultRule("stall", seconds=None, times=1))  # never answers
    (route,) = [r for r in door.router.routes if r.name == "sim-gpt"]
    handle = route.deployments[0].handle
    call = asyncio.ensure_future(
        httpx.AsyncClient().post(
            f"{base_url(door)}/v1/chat/completions",
            headers={"authorization": f"Bearer {TEST_KEY}"},
            json={"model": "sim-gpt", "messages": [{"role": "user", "content": "hello"}]},
            timeout=30,
        )
    )
    await until(lambda: handle.limiter.in_flight == 1, "the request went upstream", seconds=30)
    call.cancel()  # the client closes its connection
    await asyncio.gather(call, return_exceptions=True)
    await until(
        lambda: handle.limiter.in_flight == 0, "the upstream request was cancelled", seconds=30
    )
    await until(lambda: door.observability.calls.count == 0, "the call ended", seconds=30)
    samples = await scrape(door)
    assert value(samples, "ai_gateway_requests_total", code="CANCELLED", transport="http") == 1


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_stream_that_fails_after_its_first_event_ends_with_the_apis_error_event(
    door: Gateway, simulator: Simulator, api: str
) -> None:
    # Paced, so the first chunks reach the caller before the failure: from then on the
    # stream cannot fail over, and its end must say it failed.
    simulator.config.tokens_per_second = 50
    simulator.add_fault(FaultRule("stream_error", status=500, after_chunks=6, times=1))
    prompt = [{"role": "user", "content": "/tokens 20 doomed"}]
    if api == "openai":
        url, body = "/v1/chat/completions", {"model": "sim-gpt", "stream": True, "messages": prompt}
        headers = {"authorization": f"Bearer {TEST_KEY}"}
    else:
        body = {"model": "sim-claude", "max_tokens": 100, "stream": True, "messages": prompt}
        url, headers = "/v1/messages", {"x-api-key": TEST_KEY}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{base_url(door)}{url}", headers=headers, json=body)
    assert response.status_code == 200
    events = [e for e in response.text.split("\n\n") if e]
    if api == "openai":
        assert "[DONE]" not in response.text
        error = orjson.loads(events[-1].removeprefix("data: "))["error"]
        assert error["code"] == "stream_interrupted"
    else:
        assert "message_stop" not in response.text
        name, data = events[-1].split("\n")
        assert name == "event: error"
        assert orjson.loads(data.removeprefix("data: "))["type"] == "error"
    assert "stream interrupted after" in response.text

    # The SDKs raise on it, mid-stream, after the text they got.
    simulator.add_fault(FaultRule("stream_error", status=500, after_chunks=6, times=1))
    if api == "openai":
        async with openai_with(door, TEST_KEY) as client:
            stream = await client.chat.completions.create(
                model="sim-gpt",
                messages=prompt,
                stream=True,  # type: ignore[arg-type]
            )
            with pytest.raises(openai.APIError, match="stream interrupted"):
                async for _ in stream:
                    pass
    else:
        async with anthropic_with(door, TEST_KEY) as client:
            with pytest.raises(anthropic.APIStatusError, match="stream interrupted"):
                async with client.messages.stream(
                    model="sim-claude",
                    max_tokens=100,
                    messages=prompt,  # type: ignore[arg-type]
                ) as stream:
                    async for _ in stream:
                        pass


async def test_a_stream_still_running_at_the_end_of_a_drain_says_it_was_cut(
    door: Gateway, simulator: Simulator
) -> None:
    """The stream contract through a stop: near the end of the grace the gateway ends the
    stream itself, with the API's error event, never [DONE]; the call is recorded."""
    simulator.config.tokens_per_second = 5  # 100 words: 20 s, far past the grace
    body = {
        "model": "sim-gpt",
        "stream": True,
        "messages": [{"role": "user", "content": "/tokens 100 slow"}],
    }
    async with httpx.AsyncClient(timeout=30) as http:
        request = http.build_request(
            "POST",
            f"{base_url(door)}/v1/chat/completions",
            headers={"authorization": f"Bearer {TEST_KEY}"},
            json=body,
        )
        response = await http.send(request, stream=True)
        lines = response.aiter_lines()
        assert (await anext(lines)).startswith("data: {")
        stopping = asyncio.ensure_future(door.stop(grace=2))
        rest = [line async for line in lines if line]
        await stopping
    assert "data: [DONE]" not in rest
    error = orjson.loads(rest[-1].removeprefix("data: "))["error"]
    assert error["code"] == "stream_interrupted" and "shutting down" in error["message"]


async def test_unknown_paths_and_methods_in_openais_shape(door: Gateway) -> None:
    async with httpx.AsyncClient(base_url=base_url(door)) as http:
        unparsable = await http.post(
            "/v1/chat/completions", headers={"authorization": f"Bearer {TEST_KEY}"}, content=b"{"
        )
        # A seed past 64 bits (read as a float): refused by field, the caller's to mend.
        overflow = await http.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {TEST_KEY}"},
            json={"model": "sim-gpt", "seed": 2**70, "messages": [{"role": "user", "content": ""}]},
        )
        missing = await http.get("/v1/nothing-here")
        wrong = await http.get("/v1/chat/completions")
        too_big = await http.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {TEST_KEY}"},
            content=b"x" * (8 * 1024 * 1024 + 1),
        )
    assert unparsable.status_code == 400 and unparsable.json()["error"]["param"] == "body"
    assert overflow.status_code == 400 and overflow.json()["error"]["param"] == "seed"
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert wrong.status_code == 405
    assert too_big.status_code == 413 and too_big.json()["error"]["param"] == "body"
