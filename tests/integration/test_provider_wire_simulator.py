"""The simulator speaks Anthropic's and Ollama's wire formats exactly, over real HTTP, and
answers one conversation the same way in all three formats."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from ai_service.simulator import FaultRule, Simulator, SimulatorConfig

KEY = "sim-key"
ANTHROPIC = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
OLLAMA = {"authorization": f"Bearer {KEY}"}
OPENAI = {"authorization": f"Bearer {KEY}"}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(api_key=KEY, unknown_models=frozenset({"gone"}))) as s:
        yield s


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=5.0) as client:
        yield client


def claude(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "sim-claude",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def llama(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "sim-llama", "messages": [{"role": "user", "content": text}], **extra}


async def test_anthropic_unary_message(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/messages", json=claude("hello", system="be brief"), headers=ANTHROPIC
    )
    assert response.status_code == 200
    message = response.json()
    assert set(message) == {
        "id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"
    }  # fmt: skip
    assert message["id"].startswith("msg_")
    assert (message["type"], message["role"], message["model"]) == (
        "message",
        "assistant",
        "sim-claude",
    )
    assert message["content"] == [{"type": "text", "text": "You said: hello"}]
    assert (message["stop_reason"], message["stop_sequence"]) == ("end_turn", None)
    assert message["usage"] == {"input_tokens": 3 + 2 + 3 + 1, "output_tokens": 3}


@pytest.mark.parametrize(
    ("extra", "stop_reason", "stop_sequence", "text"),
    [
        ({"stop_sequences": ["c"]}, "stop_sequence", "c", "You said: a b "),
        ({"max_tokens": 3}, "max_tokens", None, "You said: a"),
    ],
)
async def test_anthropic_stop_reasons(
    http: httpx.AsyncClient,
    extra: dict[str, Any],
    stop_reason: str,
    stop_sequence: str | None,
    text: str,
) -> None:
    response = await http.post("/v1/messages", json=claude("a b c d", **extra), headers=ANTHROPIC)
    message = response.json()
    assert (message["stop_reason"], message["stop_sequence"]) == (stop_reason, stop_sequence)
    assert message["content"][0]["text"] == text


async def test_anthropic_stream_events_in_documented_order(http: httpx.AsyncClient) -> None:
    body = claude("one two", stream=True)
    async with http.stream("POST", "/v1/messages", json=body, headers=ANTHROPIC) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = (await response.aread()).decode()
    events = [block.split("\n") for block in raw.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    data = [orjson.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert names == [
        "message_start", "ping", "content_block_start",
        "content_block_delta", "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    assert [d["type"] for d in data] == names
    text = "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta")
    assert text == "You said: one two"
    assert data[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert data[-2]["usage"] == {"output_tokens": 4}
    assert data[0]["message"]["usage"]["input_tokens"] == 5


async def test_anthropic_tool_use_and_its_input_json_deltas(http: httpx.AsyncClient) -> None:
    tools = [{"name": "weather", "input_schema": SCHEMA}]
    unary = (
        await http.post("/v1/messages", json=claude("city Oslo", tools=tools), headers=ANTHROPIC)
    ).json()
    assert unary["stop_reason"] == "tool_use"
    (block,) = unary["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert (block["name"], block["input"]) == ("weather", {"city": "Oslo"})

    body = claude("city Oslo", tools=tools, stream=True)
    async with http.stream("POST", "/v1/messages", json=body, headers=ANTHROPIC) as response:
        raw = (await response.aread()).decode()
    data = [orjson.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    start = next(d for d in data if d["type"] == "content_block_start")
    assert start["content_block"] == {**block, "input": {}}
    partial = "".join(
        d["delta"]["partial_json"] for d in data if d["type"] == "content_block_delta"
    )
    assert orjson.loads(partial) == {"city": "Oslo"}


@pytest.mark.parametrize(
    ("headers", "status", "error_type"),
    [
        ({"x-api-key": KEY}, 400, "invalid_request_error"),  # no anthropic-version
        ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
        ({**ANTHROPIC, "x-api-key": "wrong"}, 401, "authentication_error"),
    ],
)
async def test_anthropic_header_errors_in_its_error_shape(
    http: httpx.AsyncClient, headers: dict[str, str], status: int, error_type: str
) -> None:
    response = await http.post("/v1/messages", json=claude("hi"), headers=headers)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"].startswith("req_")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "sim-claude", "messages": []}, "max_tokens: Field required"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            "top-level `system`",
        ),
        (claude("hi", tool_choice={"type": "none"}), "only be specified while providing tools"),
    ],
)
async def test_anthropic_rejects_what_the_api_rejects(
    http: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await http.post("/v1/messages", json=body, headers=ANTHROPIC)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (529, "overloaded_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (404, "not_found_error"),
    ],
)
async def test_anthropic_faults_in_its_error_shape(
    http: httpx.AsyncClient, sim: Simulator, status: int, error_type: str
) -> None:
    sim.add_fault(FaultRule("status", path="/v1/messages", status=status, retry_after=2))
    response = await http.post("/v1/messages", json=claude("hi"), headers=ANTHROPIC)
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    assert response.headers["retry-after"] == "2"


async def test_ollama_unary_answer(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/chat", json=llama("hello", stream=False), headers=OLLAMA)
    assert response.status_code == 200
    answer = response.json()
    assert answer["message"] == {"role": "assistant", "content": "You said: hello"}
    assert (answer["done"], answer["done_reason"]) == (True, "stop")
    assert (answer["prompt_eval_count"], answer["eval_count"]) == (4, 3)
    assert answer["created_at"].endswith("Z")
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(answer[key], int)


async def test_ollama_streams_ndjson_unless_told_not_to(http: httpx.AsyncClient) -> None:
    body = llama("a b c", options={"num_predict": 3})
    async with http.stream("POST", "/api/chat", json=body, headers=OLLAMA) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [orjson.loads(line) async for line in response.aiter_lines() if line]
    assert all(line["done"] is False for line in lines[:-1])
    assert "".join(line["message"]["content"] for line in lines) == "You said: a"
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "length"
    assert lines[-1]["eval_count"] == 3
    assert "prompt_eval_count" not in lines[0]


async def test_ollama_tool_calls_come_whole_with_object_arguments(http: httpx.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "weather", "parameters": SCHEMA}}]
    answer = (
        await http.post(
            "/api/chat", json=llama("city Oslo", tools=tools, stream=False), headers=OLLAMA
        )
    ).json()
    assert answer["message"]["tool_calls"] == [
        {"function": {"name": "weather", "arguments": {"city": "Oslo"}}}
    ]
    assert answer["done_reason"] == "stop"


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        (
            {"model": "gone", "messages": []},
            OLLAMA,
            404,
            'model "gone" not found, try pulling it first',
        ),
        ({"messages": []}, OLLAMA, 400, "model is required"),
        (llama("hi"), {}, 401, "unauthorized"),
    ],
)
async def test_ollama_errors_in_its_error_shape(
    http: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str], status: int, error: str
) -> None:
    response = await http.post("/api/chat", json=body, headers=headers)
    assert response.status_code == status
    assert response.json() == {"error": error}


async def test_one_conversation_gets_one_answer_in_every_format(http: httpx.AsyncClient) -> None:
    """The same two-turn conversation with a tool result, in each provider's own shape."""
    arguments = {"city": "Oslo"}
    openai = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "city Oslo"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {
                            "name": "weather",
                            "arguments": orjson.dumps(arguments).decode(),
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "cold and dark"},
        ],
    }
    anthropic = {
        "model": "m",
        "max_tokens": 100,
        "system": "be brief",
        "messages": [
            {"role": "user", "content": "city Oslo"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "c1", "name": "weather", "input": arguments}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "cold and dark"}
                ],
            },
        ],
    }
    ollama = {
        "model": "m",
        "stream": False,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "city Oslo"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "weather", "arguments": arguments}}],
            },
            {"role": "tool", "content": "cold and dark", "tool_name": "weather"},
        ],
    }
    a = (await http.post("/v1/chat/completions", json=openai, headers=OPENAI)).json()
    b = (await http.post("/v1/messages", json=anthropic, headers=ANTHROPIC)).json()
    c = (await http.post("/api/chat", json=ollama, headers=OLLAMA)).json()
    text = "Tool result received: cold and dark"
    assert a["choices"][0]["message"]["content"] == text
    assert b["content"] == [{"type": "text", "text": text}]
    assert c["message"]["content"] == text
    prompt = a["usage"]["prompt_tokens"]
    assert b["usage"]["input_tokens"] == prompt
    assert c["prompt_eval_count"] == prompt
