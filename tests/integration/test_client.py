"""The client package against a real gRPC server on a loopback port.

The gateway is built elsewhere, so a small deterministic `AIService` runs here, on
its own event loop in a background thread (the sync client and the CLI subprocess
block; they must not block the loop that serves them). It answers `echo: <prompt>`,
checks the bearer key and fails with rich google.rpc details on demand: the prompt
selects the behaviour.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_status import rpc_status

from ai_service_client import (
    AIClient,
    AIServiceError,
    AsyncAIClient,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Message,
    TLSOptions,
    build_chat_request,
)
from ai_service_client._channel import ChannelSpec
from ai_service_client.cli import main
from ai_service_protos import ai_service_pb2, ai_service_pb2_grpc
from tests.conftest import until

KEY = "test-key"
MODELS = [("echo-1", "openai"), ("echo-2", "anthropic")]
REPO = Path(__file__).resolve().parents[2]


# --- the test server ----------------------------------------------------------------------


def _any(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


RATE_LIMIT_MESSAGE = "rate limit of 60 requests/minute exceeded for key 'demo'"


@dataclass
class Recorder:
    """What the servicer saw, for the tests to check; written on the server's loop."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # ChatCompletion's request.model
    cancelled: dict[str, threading.Event] = field(default_factory=dict)
    #: Each call's time remaining, as the server saw it (None: no deadline).
    deadlines: list[float | None] = field(default_factory=list)

    def cancel_event(self, name: str) -> threading.Event:
        return self.cancelled.setdefault(name, threading.Event())


class EchoService(ai_service_pb2_grpc.AIServiceServicer):
    """Answers `echo: <prompt>`; `rate-limit`, `bad`, `slow`, `mangled` and `endless:*`
    misbehave."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def _check(self, request: object, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        self.recorder.metadata.append(metadata)
        self.recorder.deadlines.append(context.time_remaining())
        if metadata.get("authorization") != f"Bearer {KEY}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown API key")

    async def _fail_on_demand(self, prompt: str, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        if prompt == "rate-limit":
            status = status_pb2.Status(
                code=code_pb2.RESOURCE_EXHAUSTED,
                message=RATE_LIMIT_MESSAGE,
                details=[
                    _any(
                        error_details_pb2.RetryInfo(
                            retry_delay=duration_pb2.Duration(seconds=1, nanos=200_000_000)
                        )
                    ),
                    _any(
                        error_details_pb2.QuotaFailure(
                            violations=[
                                error_details_pb2.QuotaFailure.Violation(
                                    subject="key:demo", description="60 requests/minute"
                                )
                            ]
                        )
                    ),
                    _any(
                        error_details_pb2.ErrorInfo(
                            reason="RATE_LIMITED",
                            domain="ai-service",
                            metadata={"limit": "60"},
                        )
                    ),
                ],
            )
            await context.abort_with_status(rpc_status.to_status(status))
        if prompt == "bad":
            violation = error_details_pb2.BadRequest.FieldViolation(
                field="temperature", description="must be between 0 and 2"
            )
            status = status_pb2.Status(
                code=code_pb2.INVALID_ARGUMENT,
                message="invalid request",
                details=[_any(error_details_pb2.BadRequest(field_violations=[violation]))],
            )
            await context.abort_with_status(rpc_status.to_status(status))
        if prompt == "slow":
            await asyncio.sleep(5)
        if prompt == "mangled":  # a details trailer a proxy garbled
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "upstream down",
                (("grpc-status-details-bin", b"\x0a\xff\xff\xff"),),
            )

    async def ChatCompletion(
        self,
        request: ChatCompletionRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> ChatCompletionResponse:
        await self._check(request, context)
        prompt = request.messages[-1].content
        await self._fail_on_demand(prompt, context)
        self.recorder.models.append(request.model)
        answer = f"echo: {prompt}"
        if request.HasField("max_tokens"):
            answer += f" (max_tokens={request.max_tokens})"
        if request.messages[0].role == "system":
            answer += f" [system: {request.messages[0].content}]"
        return ChatCompletionResponse(
            id="cmpl-1",
            model=request.model,
            provider="test",
            choices=[
                ai_service_pb2.Choice(
                    message=Message(role="assistant", content=answer), finish_reason="stop"
                )
            ],
            usage=ai_service_pb2.Usage(prompt_tokens=3, completion_tokens=5, total_tokens=8),
        )

    async def StreamChatCompletion(
        self,
        request: ChatCompletionRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[ChatCompletionChunk]:
        await self._check(request, context)
        prompt = request.messages[-1].content
        await self._fail_on_demand(prompt, context)
        if prompt.startswith("endless:"):
            try:
                for sequence in range(1_000_000):
                    yield _chunk(sequence, "tick ")
                    await asyncio.sleep(0.01)
            except (asyncio.CancelledError, GeneratorExit):
                # GeneratorExit: the cancel landed in grpc.aio's send of a chunk, and
                # grpc closed this stream at its `yield`.
                self.recorder.cancel_event(prompt).set()
                raise
            return
        words = ["echo:", *prompt.split()]
        for sequence, word in enumerate(words):
            yield _chunk(sequence, word if sequence == 0 else f" {word}")
        yield ChatCompletionChunk(
            sequence=len(words),
            choices=[ai_service_pb2.ChunkChoice(finish_reason="stop")],
            usage=ai_service_pb2.Usage(prompt_tokens=3, completion_tokens=5, total_tokens=8),
        )

    async def ListModels(
        self,
        request: ai_service_pb2.ListModelsRequest,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> ai_service_pb2.ListModelsResponse:
        await self._check(request, context)
        return ai_service_pb2.ListModelsResponse(
            models=[ai_service_pb2.Model(id=id_, provider=provider) for id_, provider in MODELS]
        )


def _chunk(sequence: int, text: str) -> ChatCompletionChunk:
    delta = ai_service_pb2.Delta(role="assistant" if sequence == 0 else "", content=text)
    return ChatCompletionChunk(
        id="cmpl-1", sequence=sequence, choices=[ai_service_pb2.ChunkChoice(delta=delta)]
    )


@dataclass
class EchoServer:
    address: str
    tls_address: str | None
    tls_cert: Path | None
    recorder: Recorder


class _ServerThread:
    """A grpc.aio server on its own event loop in a daemon thread."""

    def __init__(self, tls: tuple[bytes, bytes] | None) -> None:
        self.tls = tls
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.recorder = Recorder()

    def start(self) -> tuple[int, int | None]:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> tuple[int, int | None]:
        self.server = grpc.aio.server()
        ai_service_pb2_grpc.add_AIServiceServicer_to_server(EchoService(self.recorder), self.server)
        health = health_aio.HealthServicer()
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        await health.set("ai_service.v1.AIService", health_pb2.HealthCheckResponse.SERVING)
        await health.set("sleepy", health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        tls_port = None
        if self.tls is not None:
            credentials = grpc.ssl_server_credentials([self.tls])
            tls_port = self.server.add_secure_port("127.0.0.1:0", credentials)
        await self.server.start()
        return port, tls_port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path] | None:
    """A self-signed certificate for `localhost`, if openssl is here to make one."""
    if shutil.which("openssl") is None:
        return None
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def server(tls_files: tuple[Path, Path] | None) -> Iterator[EchoServer]:
    tls = None if tls_files is None else (tls_files[1].read_bytes(), tls_files[0].read_bytes())
    thread = _ServerThread(tls)
    port, tls_port = thread.start()
    yield EchoServer(
        address=f"127.0.0.1:{port}",
        tls_address=None if tls_port is None else f"127.0.0.1:{tls_port}",
        tls_cert=None if tls_files is None else tls_files[0],
        recorder=thread.recorder,
    )
    thread.stop()


def _request(prompt: str) -> ChatCompletionRequest:
    return build_chat_request(prompt, model="echo-1")


# --- async client -------------------------------------------------------------------------


async def test_async_chat_answers_and_sends_the_key_as_bearer(server: EchoServer) -> None:
    async with AsyncAIClient(server.address, KEY) as client:
        response = await client.chat(_request("hello"))
    assert response.choices[0].message.content == "echo: hello"
    assert response.usage.total_tokens == 8
    assert server.recorder.metadata[-1]["authorization"] == f"Bearer {KEY}"


async def test_async_ask_builds_a_one_message_request_with_params(server: EchoServer) -> None:
    async with AsyncAIClient(server.address, KEY) as client:
        answer = await client.ask("hi", model="echo-1", system="be brief", max_tokens=7)
    assert answer == "echo: hi (max_tokens=7) [system: be brief]"


async def test_async_stream_yields_chunks_in_order(server: EchoServer) -> None:
    async with AsyncAIClient(server.address, KEY) as client:
        chunks = [chunk async for chunk in client.stream_chat(_request("one two three"))]
    assert [chunk.sequence for chunk in chunks] == list(range(len(chunks)))
    text = "".join(choice.delta.content for chunk in chunks for choice in chunk.choices)
    assert text == "echo: one two three"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.total_tokens == 8


async def test_async_list_models_and_health(server: EchoServer) -> None:
    async with AsyncAIClient(server.address, KEY) as client:
        models = await client.list_models()
        assert [(model.id, model.provider) for model in models] == MODELS
        assert await client.health() == "SERVING"
        assert await client.health("sleepy") == "NOT_SERVING"
        with pytest.raises(AIServiceError) as caught:
            await client.health("no-such-service")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND


async def test_rate_limit_decodes_retry_after_quota_and_reason(server: EchoServer) -> None:
    async with AsyncAIClient(server.address, KEY) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(_request("rate-limit"))
    error = caught.value
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.message == RATE_LIMIT_MESSAGE
    assert error.retry_after == pytest.approx(1.2)
    assert error.quota_violations == [("key:demo", "60 requests/minute")]
    assert error.reason == "RATE_LIMITED"
    assert error.domain == "ai-service"
    assert error.error_metadata == {"limit": "60"}
    assert str(error) == f"RESOURCE_EXHAUSTED: {RATE_LIMIT_MESSAGE} (retry after 1.2s)"


async def test_a_mangled_details_trailer_still_gives_the_status_line(
    server: EchoServer,
) -> None:
    async with AsyncAIClient(server.address, KEY) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(_request("mangled"))
    assert str(caught.value) == "UNAVAILABLE: upstream down"


async def test_error_before_the_first_chunk_raises_from_the_stream(server: EchoServer) -> None:
    async with AsyncAIClient(server.address, KEY) as client:
        with pytest.raises(AIServiceError) as caught:
            async for _ in client.stream_chat(_request("rate-limit")):
                pass
    assert caught.value.retry_after == pytest.approx(1.2)


async def test_breaking_out_of_an_async_stream_cancels_it_at_the_server(
    server: EchoServer,
) -> None:
    cancelled = server.recorder.cancel_event("endless:async")
    async with AsyncAIClient(server.address, KEY) as client:
        async for chunk in client.stream_chat(_request("endless:async")):
            if chunk.sequence == 2:
                break
        # The channel is still open: the server saw the cancel, not a closed connection.
        assert await asyncio.to_thread(cancelled.wait, 5)


async def test_cancelling_the_reading_task_cancels_the_stream(server: EchoServer) -> None:
    cancelled = server.recorder.cancel_event("endless:task")

    async with AsyncAIClient(server.address, KEY) as client:
        streaming = asyncio.Event()

        async def read_forever() -> None:
            async for _ in client.stream_chat(_request("endless:task")):
                streaming.set()

        task = asyncio.create_task(read_forever())
        await asyncio.wait_for(streaming.wait(), 10)  # the server is inside the stream
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(cancelled.wait, 5)


async def test_cancel_from_another_task_ends_the_stream_quietly(server: EchoServer) -> None:
    async with AsyncAIClient(server.address, KEY) as client:
        stream = client.stream_chat(_request("endless:other"))
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 1:  # cancelled from elsewhere while this task reads on
                asyncio.get_running_loop().call_soon(stream.cancel)
    assert chunks
    assert await asyncio.to_thread(server.recorder.cancel_event("endless:other").wait, 5)


async def test_closing_the_client_ends_its_calls_with_an_aiservice_error(
    server: EchoServer,
) -> None:
    # Not a CancelledError: the tasks reading were not cancelled, and a TaskGroup or
    # gather would take that for their own cancellation.
    client = AsyncAIClient(server.address, KEY)

    async def read() -> None:
        async for _ in client.stream_chat(_request("endless:closed")):
            pass

    seen = len(server.recorder.deadlines)
    reading = asyncio.create_task(read())
    asking = asyncio.create_task(client.chat(_request("slow")))
    await until(lambda: len(server.recorder.deadlines) == seen + 2, "both calls reach the server")
    await client.close()
    for task in (reading, asking):
        with pytest.raises(AIServiceError) as caught:
            await task
        assert caught.value.code is grpc.StatusCode.CANCELLED


async def test_missing_key_and_per_call_key_override(server: EchoServer) -> None:
    async with AsyncAIClient(server.address) as anonymous:
        with pytest.raises(AIServiceError) as caught:
            await anonymous.list_models()
        assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
        assert str(caught.value) == "UNAUTHENTICATED: missing or unknown API key"
        models = await anonymous.list_models(metadata={"Authorization": f"Bearer {KEY}"})
    assert len(models) == 2


async def test_deadlines_default_per_method_and_none_means_none(server: EchoServer) -> None:
    seen = server.recorder.deadlines
    async with AsyncAIClient(server.address, KEY) as client:
        await client.chat(_request("hi"))
        [chunk async for chunk in client.stream_chat(_request("hi"))]
        await client.chat(_request("hi"), timeout=None)
    unary, stream, unbounded = seen[-3:]
    assert unary is not None and 55 < unary < 61
    assert stream is not None and 590 < stream < 601  # a stream lasts as the model writes
    assert unbounded is None  # no deadline at all, not the service config's


async def test_per_call_timeout_is_a_deadline(server: EchoServer) -> None:
    async with AsyncAIClient(server.address, KEY, timeout=None) as client:
        with pytest.raises(AIServiceError) as caught:
            await client.chat(_request("slow"), timeout=0.2)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = server.recorder.deadlines[-1]  # the server was told it, too
    # gRPC rounds the timeout it sends up (never early): a little over 0.2 s, not the 60 s
    # of the service config.
    assert deadline is not None and 0 < deadline < 0.25


# --- sync client --------------------------------------------------------------------------


def test_sync_chat_stream_models_and_health(server: EchoServer) -> None:
    with AIClient(server.address, KEY) as client:
        assert client.ask("hello", model="echo-1") == "echo: hello"
        chunks = list(client.stream_chat(_request("a b")))
        assert "".join(c.delta.content for chunk in chunks for c in chunk.choices) == "echo: a b"
        assert [model.id for model in client.list_models()] == ["echo-1", "echo-2"]
        assert client.health("ai_service.v1.AIService") == "SERVING"


def test_sync_bad_request_decodes_field_violations_in_one_line(server: EchoServer) -> None:
    with AIClient(server.address, KEY) as client, pytest.raises(AIServiceError) as caught:
        client.chat(_request("bad"))
    error = caught.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations == [("temperature", "must be between 0 and 2")]
    assert error.retry_after is None
    assert str(error) == "INVALID_ARGUMENT: invalid request (temperature: must be between 0 and 2)"


def test_leaving_a_sync_stream_cancels_it_at_the_server(server: EchoServer) -> None:
    cancelled = server.recorder.cancel_event("endless:sync")
    with AIClient(server.address, KEY) as client:
        with client.stream_chat(_request("endless:sync")) as stream:
            for chunk in stream:
                if chunk.sequence == 2:
                    break
        assert cancelled.wait(5)


def test_a_sync_stream_cancelled_from_another_thread_ends_quietly(server: EchoServer) -> None:
    with AIClient(server.address, KEY) as client:
        stream = client.stream_chat(_request("endless:thread"))
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 1:  # cancelled elsewhere while this thread reads on
                threading.Timer(0.05, stream.cancel).start()
    assert chunks
    assert server.recorder.cancel_event("endless:thread").wait(5)


def test_tls_channel_with_a_private_root(server: EchoServer) -> None:
    if server.tls_address is None or server.tls_cert is None:
        pytest.skip("openssl is not installed")
    tls = TLSOptions(root_certificates_path=server.tls_cert, server_name_override="localhost")
    with AIClient(server.tls_address, KEY, tls=tls) as client:
        assert client.ask("secure", model="echo-1") == "echo: secure"


def test_tls_options_check_their_files_up_front(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        TLSOptions(client_certificate_path=tmp_path / "cert.pem")
    with pytest.raises(FileNotFoundError):
        AIClient("127.0.0.1:1", tls=TLSOptions(root_certificates_path=tmp_path / "nope.pem"))


# --- command line -------------------------------------------------------------------------


@pytest.fixture
def cli_env(server: EchoServer, monkeypatch: pytest.MonkeyPatch) -> EchoServer:
    monkeypatch.setenv("AI_SERVICE_ADDR", server.address)
    monkeypatch.setenv("AI_SERVICE_KEY", KEY)
    monkeypatch.delenv("AI_SERVICE_MODEL", raising=False)
    return server


def test_cli_chat_prints_the_answer_and_usage_with_v(
    cli_env: EchoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chat", "hello there", "--max-tokens", "5", "-v"]) == 0
    out, err = capsys.readouterr()
    assert out == "echo: hello there (max_tokens=5)\n"
    assert "total=8" in err
    # No --model and no AI_SERVICE_MODEL: the first listed model was used.
    assert cli_env.recorder.models[-1] == "echo-1"


def test_cli_chat_streams(cli_env: EchoServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--stream", "--model", "echo-2", "one two"]) == 0
    assert capsys.readouterr().out == "echo: one two\n"


def test_cli_models_and_health(cli_env: EchoServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()] == [
        list(model) for model in MODELS
    ]
    assert main(["health"]) == 0
    assert capsys.readouterr().out == "SERVING\n"
    assert main(["health", "sleepy"]) == 1
    assert capsys.readouterr().out == "NOT_SERVING\n"


def test_cli_errors_are_one_line_with_exit_1(
    cli_env: EchoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chat", "rate-limit", "--model", "echo-1"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: RESOURCE_EXHAUSTED: {RATE_LIMIT_MESSAGE} (retry after 1.2s)\n"
    # Flags after the subcommand override the environment.
    assert main(["models", "--key", "wrong"]) == 1
    assert capsys.readouterr().err == "error: UNAUTHENTICATED: missing or unknown API key\n"


def test_cli_usage_errors_exit_2(cli_env: EchoServer, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["chat"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["chat", "hi", "--max-tokens", "0"])
    assert caught.value.code == 2


def test_cli_as_a_real_process(server: EchoServer) -> None:
    env = {**os.environ, "AI_SERVICE_KEY": KEY, "AI_SERVICE_MODEL": "echo-1"}
    env.pop("AI_SERVICE_ADDR", None)
    command = [sys.executable, "-m", "ai_service_client", "--addr", server.address]

    done = subprocess.run(
        [*command, "chat", "--stream", "streamed words"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "echo: streamed words\n", "")

    failed = subprocess.run(
        [*command, "chat", "bad"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert failed.returncode == 1
    assert failed.stderr == (
        "error: INVALID_ARGUMENT: invalid request (temperature: must be between 0 and 2)\n"
    )


def test_cli_takes_a_key_read_with_its_newline_and_a_prompt_that_is_not_utf8(
    server: EchoServer,
) -> None:
    env = {**os.environ, "AI_SERVICE_KEY": f"{KEY}\n", "AI_SERVICE_MODEL": "echo-1"}
    done = subprocess.run(
        [sys.executable, "-m", "ai_service_client", "--addr", server.address, "chat", "-"],
        cwd=REPO,
        env=env,
        input=b"caf\xe9 ok",
        capture_output=True,
        timeout=30,
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.decode() == "echo: caf\ufffd ok\n"


def test_cli_ctrl_c_mid_stream_exits_130_and_cancels_the_call(server: EchoServer) -> None:
    env = {**os.environ, "AI_SERVICE_KEY": KEY, "AI_SERVICE_MODEL": "echo-1"}
    env["AI_SERVICE_ADDR"] = server.address
    cancelled = server.recorder.cancel_event("endless:cli")
    # Ctrl-C as a terminal gives it, even when the tests run where SIGINT is ignored (a
    # background job, nohup), which a child would inherit; a handled signal is reset to
    # its default in the child instead. (Not a preexec_fn: forking with gRPC's threads
    # running is unsafe, and now and then the child died before exec.)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "ai_service_client", "chat", "--stream", "endless:cli"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert process.stdout is not None
        assert process.stdout.read(5) == "tick "  # streaming has begun
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "Traceback" not in err
    assert cancelled.wait(5)


def test_an_error_survives_pickling_whole() -> None:
    # A process pool sends errors back pickled.
    error = AIServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "slow down",
        retry_after=3600,
        reason="RATE_LIMITED",
        request_id="r-1",
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.retry_after, copy.reason, copy.request_id) == (
        error.code,
        3600,
        "RATE_LIMITED",
        "r-1",
    )
    assert str(copy) == str(error) == "RESOURCE_EXHAUSTED: slow down (retry after 3600s)"
    assert copy.args == error.args


def test_a_callers_channel_options_replace_the_clients_own() -> None:
    # gRPC keeps the first of two options with one name: the caller's must replace ours.
    mine = ("grpc.primary_user_agent", "mine/1.0")
    no_retries = ("grpc.service_config", '{"methodConfig": []}')
    spec = ChannelSpec.build("x:1", tls=None, service_config=None, options=[mine, no_retries])
    options = dict(spec.options)
    assert len(options) == len(spec.options)
    assert options["grpc.primary_user_agent"] == "mine/1.0"
    assert options["grpc.service_config"] == '{"methodConfig": []}'
