"""The gateway as a real process: `python -m ai_service`, grpcurl, the `ai-client` command.

Every process runs on a free loopback port, is waited for through its gRPC health
Check (bounded), and is killed in teardown whatever the test did. The grpcurl
commands below are the ones the README shows, with the port replaced.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ai_service.simulator import plan_reply
from ai_service_client import AIServiceError, AsyncAIClient, ChatCompletionChunk, build_chat_request
from tests.conftest import REPO, TEST_KEY, config_tree, write_config
from tests.processes import (
    ANY_PORT,
    GRACE_SECONDS,
    STREAM_PROMPT,
    VENV_BIN,
    Running,
    clean_env,
    run_gateway_to_exit,
    start_gateway_process,
    start_simulator,
    wait_serving,
)

GRPCURL = VENV_BIN / "grpcurl"
AI_CLIENT = VENV_BIN / "ai-client"
README_ADDRESS = "127.0.0.1:50051"  # the address in the README's commands

# The README's commands, verbatim; README_ADDRESS is replaced by the test's address.
GRPCURL_LIST = "grpcurl -plaintext 127.0.0.1:50051 list"
GRPCURL_DESCRIBE_SERVICE = "grpcurl -plaintext 127.0.0.1:50051 describe ai_service.v1.AIService"
GRPCURL_DESCRIBE_REQUEST = (
    "grpcurl -plaintext 127.0.0.1:50051 describe ai_service.v1.ChatCompletionRequest"
)
HELLO = '{"model":"sim-gpt","messages":[{"role":"user","content":"hello"}]}'
GRPCURL_CHAT = (
    "grpcurl -plaintext -H 'authorization: Bearer demo-key' "
    f"-d '{HELLO}' 127.0.0.1:50051 ai_service.v1.AIService/ChatCompletion"
)
GRPCURL_STREAM = (
    "grpcurl -plaintext -H 'authorization: Bearer demo-key' "
    f"-d '{HELLO}' 127.0.0.1:50051 ai_service.v1.AIService/StreamChatCompletion"
)
GRPCURL_CHAT_NO_KEY = (
    f"grpcurl -plaintext -d '{HELLO}' 127.0.0.1:50051 ai_service.v1.AIService/ChatCompletion"
)
GRPCURL_HEALTH = "grpcurl -plaintext 127.0.0.1:50051 grpc.health.v1.Health/Check"
GRPCURL_USAGE = (
    "grpcurl -plaintext -H 'authorization: Bearer demo-key' "
    "127.0.0.1:50051 ai_service.v1.AIService/GetUsage"
)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """`python -m server --listen 127.0.0.1:0`: the embedded default, no config."""
    running = start_gateway_process([], tmp_path_factory.mktemp("embedded"))
    try:
        yield running
    finally:
        running.process.kill()


# --- grpcurl ------------------------------------------------------------------------------


def grpcurl(command: str, address: str) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command.replace(README_ADDRESS, address))
    assert argv[0] == "grpcurl", command
    return subprocess.run(
        [str(GRPCURL), *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=30
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}: {result.stderr}"
    return result.stdout


def json_documents(text: str) -> list[dict[str, Any]]:
    """The JSON objects grpcurl prints one after another for a stream."""
    decoder = json.JSONDecoder()
    documents, index = [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
    return documents


def test_banner_names_the_demo_key_and_its_command_works(embedded: Running) -> None:
    banner = embedded.process.stdout()
    assert f"ai-service is serving on {embedded.address}" in banner
    assert "demo caller key: demo-key" in banner
    # The command the banner suggests works as printed.
    (try_line,) = [line for line in banner.splitlines() if line.startswith("try: grpcurl ")]
    answer = json.loads(ok(grpcurl(try_line.removeprefix("try: "), embedded.address)))
    assert answer["choices"][0]["message"]["content"] == "You said: hello"


def test_grpcurl_lists_and_describes_through_reflection(embedded: Running) -> None:
    services = ok(grpcurl(GRPCURL_LIST, embedded.address)).split()
    assert "ai_service.v1.AIService" in services
    assert "grpc.health.v1.Health" in services

    service = ok(grpcurl(GRPCURL_DESCRIBE_SERVICE, embedded.address))
    assert "ai_service.v1.AIService is a service" in service
    for rpc in ("ChatCompletion", "StreamChatCompletion", "ListModels"):
        assert f"rpc {rpc} (" in service

    request = ok(grpcurl(GRPCURL_DESCRIBE_REQUEST, embedded.address))
    assert "ai_service.v1.ChatCompletionRequest is a message" in request
    assert "string model = 1;" in request
    assert "repeated .ai_service.v1.Message messages = 2;" in request


def test_grpcurl_unary_and_stream_agree(embedded: Running) -> None:
    answer = json.loads(ok(grpcurl(GRPCURL_CHAT, embedded.address)))
    (choice,) = answer["choices"]
    assert choice["message"] == {"role": "assistant", "content": "You said: hello"}
    assert choice["finish_reason"] == "stop"
    usage = answer["usage"]
    assert usage["completion_tokens"] == 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 3

    chunks = json_documents(ok(grpcurl(GRPCURL_STREAM, embedded.address)))
    assert len(chunks) >= 3
    assert len({chunk["id"] for chunk in chunks}) == 1
    text = "".join(
        choice.get("delta", {}).get("content", "")
        for chunk in chunks
        for choice in chunk.get("choices", [])
    )
    assert text == "You said: hello"
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["usage"] == usage
    assert all("usage" not in chunk for chunk in chunks[:-1])


EMBEDDED_MODELS = [
    ("sim-gpt", "openai"),
    ("sim-claude", "anthropic"),
    ("sim-llama", "ollama"),
    ("sim-azure", "azure_openai"),
    ("sim-gemini", "gemini"),
    ("sim-bedrock", "bedrock"),
]


EMBEDDED_PROVIDERS = {
    "openai": "simulator",
    "anthropic": "simulator-anthropic",
    "ollama": "simulator-ollama",
    "azure_openai": "simulator-azure",
    "gemini": "simulator-gemini",
    "bedrock": "simulator-bedrock",
}


@pytest.mark.parametrize(("model", "kind"), EMBEDDED_MODELS)
def test_grpcurl_every_provider_kind_answers_unary_and_streamed_alike(
    embedded: Running, model: str, kind: str
) -> None:
    unary = json.loads(ok(grpcurl(GRPCURL_CHAT.replace("sim-gpt", model), embedded.address)))
    assert unary["choices"][0]["message"]["content"] == "You said: hello"
    assert unary["provider"] == EMBEDDED_PROVIDERS[kind]  # its kind's simulated provider
    chunks = json_documents(ok(grpcurl(GRPCURL_STREAM.replace("sim-gpt", model), embedded.address)))
    text = "".join(
        choice.get("delta", {}).get("content", "")
        for chunk in chunks
        for choice in chunk.get("choices", [])
    )
    assert text == "You said: hello"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == unary["usage"]


def test_grpcurl_get_usage_shows_the_cost_of_the_calls_made(embedded: Running) -> None:
    def sim_gpt(report: dict[str, Any]) -> tuple[int, float]:
        rows = [row for row in report.get("rows", []) if row["model"] == "sim-gpt"]
        return sum(int(r["calls"]) for r in rows), sum(r.get("cost", 0.0) for r in rows)

    before = sim_gpt(json.loads(ok(grpcurl(GRPCURL_USAGE, embedded.address))))
    answers = [json.loads(ok(grpcurl(GRPCURL_CHAT, embedded.address))) for _ in range(2)]
    report = json.loads(ok(grpcurl(GRPCURL_USAGE, embedded.address)))
    # The embedded default prices its simulated models (examples, not a provider's).
    cost = answers[0]["cost"]
    assert cost["currency"] == "USD" and cost["amount"] > 0
    assert (report["scope"], report["currency"]) == ("key:demo", "USD")
    calls, spent = sim_gpt(report)
    assert calls == before[0] + 2
    assert spent == pytest.approx(before[1] + sum(a["cost"]["amount"] for a in answers))


def test_grpcurl_without_a_key_is_unauthenticated(embedded: Running) -> None:
    result = grpcurl(GRPCURL_CHAT_NO_KEY, embedded.address)
    assert result.returncode == 64 + grpc.StatusCode.UNAUTHENTICATED.value[0], result.stderr
    assert "Code: Unauthenticated" in result.stderr
    assert "demo-key" not in result.stderr


def test_grpcurl_health_check_is_serving(embedded: Running) -> None:
    assert json.loads(ok(grpcurl(GRPCURL_HEALTH, embedded.address))) == {"status": "SERVING"}
    per_service = GRPCURL_HEALTH.replace(
        "-plaintext", """-plaintext -d '{"service":"ai_service.v1.AIService"}'"""
    )
    assert json.loads(ok(grpcurl(per_service, embedded.address))) == {"status": "SERVING"}


# --- ai-client ----------------------------------------------------------------------------


def ai_client(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AI_CLIENT), "--addr", address, "--timeout", "20", *args],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ai_client_commands(embedded: Running) -> None:
    address = embedded.address
    assert ok(ai_client(address, "--key", "demo-key", "chat", "hi")) == "You said: hi\n"
    assert ok(ai_client(address, "--key", "demo-key", "chat", "hi", "--stream")) == "You said: hi\n"
    models = ok(ai_client(address, "--key", "demo-key", "models")).splitlines()
    assert [line.split() for line in models] == [
        ["sim-gpt", "openai"],
        ["sim-claude", "anthropic"],
        ["sim-llama", "ollama"],
        ["sim-llava", "ollama"],
        ["sim-embed", "openai"],
        ["sim-minilm", "ollama"],
        ["sim-azure", "azure_openai"],
        ["sim-gemini", "gemini"],
        ["sim-bedrock", "bedrock"],
    ]
    # One client, six wire formats: only the model name changes.
    for model, _ in EMBEDDED_MODELS[1:]:
        chat = ("--key", "demo-key", "chat", "hi", "--model", model)
        assert ok(ai_client(address, *chat)) == "You said: hi\n"
        assert ok(ai_client(address, *chat, "--stream")) == "You said: hi\n"
    assert ok(ai_client(address, "health")) == "SERVING\n"


def test_ai_client_usage_prints_a_table_and_refuses_another_key(embedded: Running) -> None:
    address = embedded.address
    ok(ai_client(address, "--key", "demo-key", "chat", "price this", "--model", "sim-claude"))
    table = ok(ai_client(address, "--key", "demo-key", "usage", "--since", "1d")).splitlines()
    assert table[0].startswith("key:demo, ") and table[0].endswith(", in USD")
    assert table[1].split() == [
        "DAY",
        "MODEL",
        "CALLS",
        "PROMPT",
        "COMPLETION",
        "CACHED",
        "CACHE_WRITE",
        "REASONING",
        "COST",
    ]
    (claude,) = [line.split() for line in table if " sim-claude " in line]
    assert int(claude[2]) >= 1 and float(claude[-1]) > 0
    assert table[-1].split()[0] == "total"
    refused = ai_client(address, "--key", "demo-key", "usage", "someone-else")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: PERMISSION_DENIED: ")


def test_ai_client_bad_key_prints_one_error_line(embedded: Running) -> None:
    result = ai_client(embedded.address, "--key", "not-the-key", "chat", "hi")
    assert result.returncode == 1, result
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: UNAUTHENTICATED: "), line
    assert "not-the-key" not in line


# --- refusing to start --------------------------------------------------------------------


def test_port_clash_is_an_error(embedded: Running) -> None:
    result = run_gateway_to_exit("--listen", embedded.address)
    assert result.returncode != 0
    assert f"cannot listen on {embedded.address}" in result.stderr, result.stderr
    # The first gateway is untouched.
    wait_serving(embedded.address, embedded.process, timeout=5)


def test_demo_key_may_not_bind_a_public_address() -> None:
    result = run_gateway_to_exit("--listen", "0.0.0.0:0")
    assert result.returncode == 2, result
    assert "invalid configuration: server.listen:" in result.stderr
    assert "demo key" in result.stderr


def test_demo_key_in_a_config_may_not_bind_a_public_address_either(tmp_path: Path) -> None:
    # --listen overrides the config's address; the loopback rule is checked again.
    tree = config_tree("http://127.0.0.1:9", auth={"keys": [{"name": "demo", "key": "demo-key"}]})
    config = write_config(tmp_path / "config.yaml", tree)
    result = run_gateway_to_exit("--config", str(config), "--listen", "0.0.0.0:0")
    assert result.returncode == 2, result
    assert "server.listen:" in result.stderr


def test_unknown_provider_reference_names_the_field(tmp_path: Path) -> None:
    tree = config_tree(
        "http://127.0.0.1:9",
        models=[{"name": "sim-gpt", "provider": "opneai", "upstream_model": "sim-gpt-1"}],
    )
    config = write_config(tmp_path / "config.yaml", tree)
    result = run_gateway_to_exit("--config", str(config), "--listen", ANY_PORT)
    assert result.returncode == 2, result
    assert "models[0].provider: unknown provider 'opneai'" in result.stderr


def test_missing_environment_variable_names_it(tmp_path: Path) -> None:
    variable = "AI_SERVICE_TEST_UNSET_PROVIDER_KEY"
    tree = config_tree("http://127.0.0.1:9")
    tree["providers"][0]["api_key"] = f"${{{variable}}}"
    config = write_config(tmp_path / "config.yaml", tree)
    env = clean_env()
    env.pop(variable, None)
    result = run_gateway_to_exit("--config", str(config), "--listen", ANY_PORT, env=env)
    assert result.returncode == 2, result
    assert f"providers[0].api_key: environment variable {variable} is not set" in result.stderr


# --- SIGTERM drains -----------------------------------------------------------------------


@pytest.fixture
def draining_gateway(tmp_path: Path) -> Iterator[Running]:
    """A gateway process from a YAML config, in front of a separate, slow simulator process."""
    simulator, sim_url = start_simulator(tmp_path, "--tokens-per-second", "20")
    gateway: Running | None = None
    try:
        tree = config_tree(sim_url, server__shutdown_grace_seconds=GRACE_SECONDS)
        config = write_config(tmp_path / "config.yaml", tree)
        gateway = start_gateway_process(["--config", str(config)], tmp_path)
        yield gateway
    finally:
        if gateway is not None:
            gateway.process.kill()
        simulator.kill()


async def test_sigterm_drains_in_flight_streams(draining_gateway: Running) -> None:
    address, process = draining_gateway.address, draining_gateway.process
    expected = plan_reply({"messages": [{"role": "user", "content": STREAM_PROMPT}]})
    assert expected.text is not None
    chunks: list[ChatCompletionChunk] = []
    started = asyncio.Event()

    async with (
        AsyncAIClient(address, TEST_KEY, timeout=30) as client,
        AsyncAIClient(address, TEST_KEY, timeout=5) as other,
        grpc.aio.insecure_channel(address) as health_channel,
    ):
        assert await other.health() == "SERVING"  # `other` is connected before the drain
        watch = health_pb2_grpc.HealthStub(health_channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=30
        )
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING

        async def consume() -> None:
            stream = client.stream_chat(build_chat_request(STREAM_PROMPT, model="sim-gpt"))
            async for chunk in stream:
                chunks.append(chunk)
                if len(chunks) == 3:
                    started.set()

        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 20)
        os.kill(process.pid, signal.SIGTERM)
        chunks_before_signal = len(chunks)

        # Health flips to NOT_SERVING (Watch is an in-flight call, so it sees the drain).
        update = await asyncio.wait_for(watch.read(), 10)
        assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # ... and then the watch ends, so that it does not hold the drain.
        assert await asyncio.wait_for(watch.read(), 10) is grpc.aio.EOF
        assert await watch.code() is grpc.StatusCode.OK

        # New calls are refused while the stream still runs. A call racing the signal may
        # still be accepted (it is then in flight and drained too), so poll for the refusal.
        refusals: dict[str, grpc.StatusCode] = {}
        deadline = asyncio.get_running_loop().time() + 10
        for name, caller in (("connected channel", other), ("streaming channel", client)):
            while name not in refusals:
                try:
                    await caller.ask("hello", model="sim-gpt", timeout=5)
                except AIServiceError as error:
                    refusals[name] = error.code
                assert asyncio.get_running_loop().time() < deadline, "new calls still accepted"
        async with AsyncAIClient(address, TEST_KEY, timeout=5) as fresh:
            with pytest.raises(AIServiceError) as fresh_call:
                await fresh.ask("hello", model="sim-gpt")
            refusals["new channel"] = fresh_call.value.code
        if consumer.done():
            await consumer  # a stream cut by the drain fails here, with its status
            pytest.fail("the stream ended before the drain could be observed")
        assert refusals == dict.fromkeys(refusals, grpc.StatusCode.UNAVAILABLE)

        await asyncio.wait_for(consumer, 30)

    # Every chunk arrived, in order, and the stream ended properly.
    assert len(chunks) > chunks_before_signal
    assert [chunk.sequence for chunk in chunks] == list(range(len(chunks)))
    text = "".join(choice.delta.content for chunk in chunks for choice in chunk.choices)
    assert text == expected.text
    assert len(expected.pieces()) == 40
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.HasField("usage")
    assert last.usage.completion_tokens == 40
    assert last.usage.prompt_tokens == expected.prompt_tokens
    assert not any(chunk.HasField("usage") for chunk in chunks[:-1])

    # The process exits 0 once the stream is done, well before the grace runs out.
    try:
        code = await asyncio.to_thread(process.popen.wait, GRACE_SECONDS - 5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after the drained stream ended\n{process.output()}")
    assert code == 0, process.output()
    assert "draining" in process.stderr()


# --- content: the acceptance calls through grpcurl -------------------------------------------

PIXEL = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
    "rkJggg=="
)


def grpcurl_call(
    address: str, method: str, body: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    command = (
        f"grpcurl -plaintext -H 'authorization: Bearer demo-key' -d '{json.dumps(body)}' "
        f"{README_ADDRESS} ai_service.v1.AIService/{method}"
    )
    return grpcurl(command, address)


def test_grpcurl_describes_the_content_fields(embedded: Running) -> None:
    describe = f"grpcurl -plaintext {README_ADDRESS} describe"
    service = ok(grpcurl(f"{describe} ai_service.v1.AIService", embedded.address))
    assert "rpc Embed ( .ai_service.v1.EmbedRequest )" in service
    message = ok(grpcurl(f"{describe} ai_service.v1.Message", embedded.address))
    assert "repeated .ai_service.v1.ContentPart parts = 6;" in message
    assert "repeated .ai_service.v1.ReasoningBlock reasoning = 7;" in message
    request = ok(grpcurl(f"{describe} ai_service.v1.ChatCompletionRequest", embedded.address))
    assert ".ai_service.v1.ReasoningConfig reasoning = 16;" in request
    usage = ok(grpcurl(f"{describe} ai_service.v1.Usage", embedded.address))
    assert "int32 reasoning_tokens = 6;" in usage


def test_grpcurl_image_reasoning_and_embed_on_every_model_that_takes_them(
    embedded: Running,
) -> None:
    listed = json.loads(ok(grpcurl_call(embedded.address, "ListModels", {})))["models"]
    capable = {name: [m["id"] for m in listed if m["capabilities"].get(name)] for name in (
        "vision", "reasoning", "embeddings")}  # fmt: skip
    clouds = ["sim-azure", "sim-gemini", "sim-bedrock"]
    assert capable == {
        "vision": ["sim-gpt", "sim-claude", "sim-llava", *clouds],
        "reasoning": ["sim-gpt", "sim-claude", "sim-llava", *clouds],
        "embeddings": ["sim-embed", "sim-minilm"],
    }
    image = {"image": {"data": PIXEL, "media_type": "image/png"}}
    for model in capable["vision"]:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "What?", "parts": [image]}],
        }
        answer = json.loads(ok(grpcurl_call(embedded.address, "ChatCompletion", body)))
        content = answer["choices"][0]["message"]["content"]
        assert content == "You said: What? You sent 1 image (image/png, 70 bytes).", model
    for model in capable["reasoning"]:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "think"}],
            "reasoning": {"effort": "low"},
        }
        answer = json.loads(ok(grpcurl_call(embedded.address, "ChatCompletion", body)))
        reasoned = answer["choices"][0]["message"].get("reasoning") or answer["usage"].get(
            "reasoning_tokens"
        )
        assert reasoned, (model, answer)
    for model in capable["embeddings"]:
        body = {"model": model, "inputs": ["a b", "c"], "dimensions": 4}
        answer = json.loads(ok(grpcurl_call(embedded.address, "Embed", body)))
        assert [len(e["values"]) for e in answer["embeddings"]] == [4, 4], model
    refused = grpcurl_call(
        embedded.address,
        "ChatCompletion",
        {
            "model": "sim-llama",
            "messages": [{"role": "user", "content": "What?", "parts": [image]}],
        },
    )
    assert refused.returncode != 0
    assert "Code: InvalidArgument" in refused.stderr
    assert '"field":"messages[0].parts[0].image"' in refused.stderr
