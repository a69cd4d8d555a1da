"""The simulator's answers have the shapes of the documented payloads in tests/fixtures/.

For each provider format, what the simulator sends over HTTP is compared with the payloads
taken from that provider's API reference (tests/fixtures/README.md): every key it sends is
one the reference shows at that place, with a type the reference shows there; every key
the reference shows in all its examples of that payload is there; a list's items are
compared with the documented items of the same `type`; and a stream's events come in the
documented order. Values are not compared: the adapters' tests do that.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from ai_service.simulator import FaultRule, Simulator, SimulatorConfig
from tests.fixtures import load_bytes, load_json

KEY = "sim-key"
OPENAI = {"authorization": f"Bearer {KEY}"}
ANTHROPIC = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
OLLAMA = {"authorization": f"Bearer {KEY}"}
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = "weather in city Paris please"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(api_key=KEY)) as simulator:
        yield simulator


@pytest.fixture
async def http(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=10.0) as client:
        yield client


# -- shapes --------------------------------------------------------------------------------


def kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def typed(item: object) -> str | None:
    """A list item's `type`, which says which documented items it is to be compared with."""
    if isinstance(item, dict) and isinstance(item.get("type"), str):
        return str(item["type"])
    return None


#: Paths whose value is the caller's own JSON (a tool's arguments): not compared.
FREE_FORM = re.compile(r".*\.(input|arguments)")


def departures(
    value: object, examples: list[Any], beyond: dict[str, str], path: str = "$"
) -> list[str]:
    """Where `value` departs from the documented `examples` of it. `beyond`: paths (patterns)
    the reference documents in its field lists though its examples leave them out → where."""
    if FREE_FORM.fullmatch(path):
        return []
    kinds = {kind(example) for example in examples}
    if "number" in kinds:
        kinds.add("integer")  # a JSON number may be written without a fraction
    mine = kind(value)
    if mine not in kinds:
        if any(re.fullmatch(pattern, path) for pattern in beyond):
            return []
        return [f"{path}: {mine}, where the reference shows {sorted(kinds)}"]
    if isinstance(value, dict):
        objects = [example for example in examples if isinstance(example, dict)]
        found = [
            f"{path}.{key}: not in the reference"
            for key in value
            if not any(key in o for o in objects)
            and not any(re.fullmatch(pattern, f"{path}.{key}") for pattern in beyond)
        ]
        always = set.intersection(*(set(o) for o in objects))
        found += [f"{path}.{key}: missing" for key in sorted(always) if key not in value]
        for key, item in value.items():
            documented = [o[key] for o in objects if key in o]
            if documented:
                found += departures(item, documented, beyond, f"{path}.{key}")
        return found
    if isinstance(value, list):
        items = [item for example in examples if isinstance(example, list) for item in example]
        found = []
        for n, item in enumerate(value):
            same = [i for i in items if typed(i) == typed(item)]
            if not same:
                found.append(
                    f"{path}[{n}]: an item of type {typed(item)!r} is not in the reference"
                )
            else:
                found += departures(item, same, beyond, f"{path}[{n}]")
        return found
    return []


def assert_documented(
    value: object, examples: list[Any], beyond: dict[str, str] | None = None
) -> None:
    assert departures(value, examples, beyond or {}) == []


def sse(body: bytes) -> list[tuple[str, Any]]:
    """(event name or "", data) of each server-sent event; "[DONE]" stays a string."""
    events = []
    for block in body.decode().strip().split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        data = fields["data"].strip()
        events.append(
            (fields.get("event", "").strip(), data if data == "[DONE]" else orjson.loads(data))
        )
    return events


def ndjson(body: bytes) -> list[Any]:
    return [orjson.loads(line) for line in body.splitlines() if line.strip()]


def order(events: list[str]) -> str:
    return " ".join(events)


def check_stream(
    sent: list[Any],
    documented: list[Any],
    kind_of: Callable[[Any], str],
    grammar: str,
    beyond: dict[str, str] | None = None,
) -> None:
    """Each event has the shape of the documented events of its kind, and the kinds come in
    the order `grammar` (a pattern over them) allows, which the documented streams follow."""
    assert re.fullmatch(grammar, order([kind_of(event) for event in sent])), [
        kind_of(event) for event in sent
    ]
    by_kind: dict[str, list[Any]] = {}
    for event in documented:
        by_kind.setdefault(kind_of(event), []).append(event)
    for event in sent:
        assert_documented(event, by_kind[kind_of(event)], beyond)


# -- OpenAI ----------------------------------------------------------------------------------

OPENAI_ANSWERS = [
    load_json("openai/content_response.json"),
    load_json("openai/tool_calls_response.json"),
]
OPENAI_STREAMS = [
    [data for _, data in sse(load_bytes("openai/stream_tool_calls.sse"))],
    [data for _, data in sse(load_bytes("openai/stream_reasoning_content.sse"))],
]
OPENAI_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather in a city", "parameters": CITY},
}
REFERENCE = "https://platform.openai.com/docs/api-reference/chat"
#: Fields the reference lists for these objects that its examples leave out.
OPENAI_ANSWER_FIELDS = {r"\$\.system_fingerprint": f"{REFERENCE}/object"}
OPENAI_CHUNK_FIELDS = {
    r"\$\.service_tier": f"{REFERENCE}/streaming",
    r"\$\.choices\[\d+\]\.delta\.refusal": f"{REFERENCE}/streaming (delta.refusal)",
    r"\$\.choices\[\d+\]\.delta\.content": f"{REFERENCE}/streaming (string or null)",
    r"\$\.usage\.(prompt|completion)_tokens_details": f"{REFERENCE}/object (usage)",
}
# The first chunk (the role), deltas, the finish, the usage chunk (asked for), the end.
OPENAI_ORDER = r"first( delta)* finish( usage)? done"


def openai_chunk(chunk: Any) -> str:
    if chunk == "[DONE]":
        return "done"
    if not chunk["choices"]:
        return "usage"
    choice = chunk["choices"][0]
    if choice["finish_reason"]:
        return "finish"
    return "first" if "role" in choice["delta"] else "delta"


def openai_chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "sim-gpt", "messages": [{"role": "user", "content": text}], **extra}


def test_the_documented_openai_streams_follow_the_order_checked() -> None:
    for stream in OPENAI_STREAMS:
        assert re.fullmatch(OPENAI_ORDER, order([openai_chunk(c) for c in stream]))


@pytest.mark.parametrize(
    "body",
    [openai_chat("hello"), openai_chat(WEATHER, tools=[OPENAI_TOOL])],
    ids=["text", "tool call"],
)
async def test_openai_answers_have_the_documented_shape(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await http.post("/v1/chat/completions", json=body, headers=OPENAI)
    assert response.status_code == 200
    assert_documented(response.json(), OPENAI_ANSWERS, OPENAI_ANSWER_FIELDS)


@pytest.mark.parametrize(
    "body",
    [openai_chat("/tokens 5 hi"), openai_chat(WEATHER, tools=[OPENAI_TOOL])],
    ids=["text", "tool call"],
)
async def test_openai_streams_have_the_documented_chunks_in_order(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    response = await http.post("/v1/chat/completions", json=body, headers=OPENAI)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = [data for _, data in sse(response.content)]
    documented = [chunk for stream in OPENAI_STREAMS for chunk in stream]
    check_stream(chunks, documented, openai_chunk, OPENAI_ORDER, OPENAI_CHUNK_FIELDS)


async def test_openai_embeddings_have_the_documented_shape(http: httpx.AsyncClient) -> None:
    body = {"model": "sim-embed", "input": ["first text", "second text"]}
    response = await http.post("/v1/embeddings", json=body, headers=OPENAI)
    assert response.status_code == 200
    assert_documented(response.json(), [load_json("openai/embeddings_response.json")])


# -- Anthropic -------------------------------------------------------------------------------

ANTHROPIC_ANSWERS = [
    load_json("anthropic/tool_use_response.json"),
    load_json("anthropic/thinking_response.json"),
]
ANTHROPIC_STREAMS = [
    sse(load_bytes(f"anthropic/{name}.sse"))
    for name in ("stream_text", "stream_tool_use", "stream_thinking")
]
ANTHROPIC_TOOL = {"name": "get_weather", "description": "Weather in a city", "input_schema": CITY}
# Pings may come anywhere (the reference says so); the rest in this order.
ANTHROPIC_ORDER = (
    r"message_start( content_block_start( content_block_delta)* content_block_stop)+"
    r" message_delta message_stop"
)


def anthropic_event(event: tuple[str, Any]) -> str:
    return event[0]


def claude(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "sim-claude",
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


THINKING = {"thinking": {"type": "enabled", "budget_tokens": 1024}}


def without_pings(events: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [event for event in events if event[0] != "ping"]


def test_the_documented_anthropic_streams_follow_the_order_checked() -> None:
    for stream in ANTHROPIC_STREAMS:
        assert re.fullmatch(ANTHROPIC_ORDER, order([name for name, _ in without_pings(stream)]))


@pytest.mark.parametrize(
    "body",
    [claude("hello"), claude(WEATHER, tools=[ANTHROPIC_TOOL]), claude("hello", **THINKING)],
    ids=["text", "tool use", "thinking"],
)
async def test_anthropic_answers_have_the_documented_shape(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await http.post("/v1/messages", json=body, headers=ANTHROPIC)
    assert response.status_code == 200
    assert_documented(response.json(), ANTHROPIC_ANSWERS)


@pytest.mark.parametrize(
    "body",
    [claude("/tokens 5 hi"), claude(WEATHER, tools=[ANTHROPIC_TOOL]), claude("hello", **THINKING)],
    ids=["text", "tool use", "thinking"],
)
async def test_anthropic_streams_have_the_documented_events_in_order(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await http.post("/v1/messages", json={**body, "stream": True}, headers=ANTHROPIC)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse(response.content)
    # The event name is the data's type, as in the reference.
    assert all(name == data["type"] for name, data in events)
    documented = [event for stream in ANTHROPIC_STREAMS for event in stream]
    check_stream(
        without_pings(events),
        [(name, data) for name, data in documented],
        anthropic_event,
        ANTHROPIC_ORDER,
    )
    for name, data in events:
        assert_documented(data, [d for n, d in documented if n == name])


async def test_anthropic_errors_have_the_documented_shape(
    sim: Simulator, http: httpx.AsyncClient
) -> None:
    sim.add_fault(FaultRule("status", status=529, times=1))
    response = await http.post("/v1/messages", json=claude("hello"), headers=ANTHROPIC)
    assert response.status_code == 529
    assert_documented(response.json(), [load_json("anthropic/error_overloaded.json")])


# -- Ollama ----------------------------------------------------------------------------------

OLLAMA_ANSWERS = [
    load_json("ollama/chat_response.json"),
    load_json("ollama/chat_response_tools.json"),
    load_json("ollama/chat_response_thinking.json"),
]
OLLAMA_STREAMS = [
    ndjson(load_bytes("ollama/chat_stream.ndjson")),
    ndjson(load_bytes("ollama/chat_stream_thinking.ndjson")),
]
OLLAMA_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather in a city", "parameters": CITY},
}
# Parts of the answer, then the last line with the counts.
OLLAMA_ORDER = r"(part )*last"


def ollama_line(line: Any) -> str:
    return "last" if line["done"] else "part"


def llama(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "sim-llama", "messages": [{"role": "user", "content": text}], **extra}


def test_the_documented_ollama_streams_follow_the_order_checked() -> None:
    for stream in OLLAMA_STREAMS:
        assert re.fullmatch(OLLAMA_ORDER, order([ollama_line(line) for line in stream]))


@pytest.mark.parametrize(
    "body",
    [llama("hello"), llama(WEATHER, tools=[OLLAMA_TOOL]), llama("hello", think=True)],
    ids=["text", "tool call", "thinking"],
)
async def test_ollama_answers_have_the_documented_shape(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await http.post("/api/chat", json={**body, "stream": False}, headers=OLLAMA)
    assert response.status_code == 200
    assert_documented(response.json(), OLLAMA_ANSWERS)


@pytest.mark.parametrize(
    "body", [llama("/tokens 5 hi"), llama("hello", think=True)], ids=["text", "thinking"]
)
async def test_ollama_streams_have_the_documented_lines_in_order(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await http.post("/api/chat", json=body, headers=OLLAMA)
    assert response.status_code == 200
    documented = [line for stream in OLLAMA_STREAMS for line in stream]
    check_stream(ndjson(response.content), documented, ollama_line, OLLAMA_ORDER)


async def test_ollama_embeddings_have_the_documented_shape(http: httpx.AsyncClient) -> None:
    body = {"model": "sim-llama", "input": ["first text", "second text"]}
    response = await http.post("/api/embed", json=body, headers=OLLAMA)
    assert response.status_code == 200
    assert_documented(response.json(), [load_json("ollama/embed_response.json")])
