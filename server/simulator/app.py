"""The simulator's HTTP server: the aiohttp application, the request path shared by every
wire format, and the `Simulator` object that starts and stops it in the caller's loop.

A request passes, in order: read and parse the body → record it in the stats → fault rules →
authentication → the format's validation → unknown model → configured latency → plan the
answer → a unary JSON body or a paced event stream.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from .anthropic_format import AnthropicFormat
from .azure_format import AzureFormat
from .bedrock_format import BedrockFormat
from .config import SimulatorConfig
from .content import PromptCache
from .control import ControlApi
from .credentials import IssuedCredentials, TokenEndpoints
from .embeddings_format import OllamaEmbedFormat, OpenAIEmbeddingsFormat
from .faults import FaultBook, FaultRule
from .gemini_format import GeminiFormat
from .ollama_format import OllamaFormat
from .openai_format import OpenAIFormat
from .planner import ReplyPlan
from .responses import (
    StreamWriter,
    cut_unary,
    error_response,
    json_response,
    reset_connection,
    stall,
)
from .stats import SimulatorStats
from .wire import ApiError, BoundFormat, StreamEvent, WireFormat

STREAM_HEADERS = {"Cache-Control": "no-cache", "Connection": "keep-alive"}
MAX_BODY_BYTES = 64 * 1024 * 1024


def _parse_body(raw: bytes) -> Any:
    """The parsed JSON, or the raw text (which every format rejects as not JSON)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


class Simulator:
    """A simulated model API on a loopback (or any) port, run inside the caller's event loop.

    ```
    async with Simulator(SimulatorConfig(latency_ms=5)) as sim:
        openai_base_url = sim.base_url + "/v1"
    ```
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.stats = SimulatorStats()
        self.faults = FaultBook(self.config.fault_seed)
        #: The prompt prefixes seen, for cache reads (shared by the formats).
        self.prompt_cache = PromptCache()
        self.openai = OpenAIFormat(self.config.system_fingerprint, self.prompt_cache)
        self.anthropic = AnthropicFormat(self.prompt_cache)
        self.ollama = OllamaFormat()
        self.openai_embeddings = OpenAIEmbeddingsFormat(self.config.system_fingerprint)
        self.ollama_embed = OllamaEmbedFormat()
        self.credentials = IssuedCredentials()
        # Formats whose URL carries the model (or deployment) and the method.
        self.azure = AzureFormat(self.credentials, self.config, self.prompt_cache)
        self.gemini = GeminiFormat(self.credentials, self.config, self.prompt_cache)
        self.bedrock = BedrockFormat(self.credentials, self.config, self.prompt_cache)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._host = "127.0.0.1"

    # -- lifecycle --------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        # Images and documents travel inside the JSON (base64): bodies far above aiohttp's
        # 1 MiB default, as the real APIs take them (OpenAI: 20 MB per image).
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        formats: tuple[WireFormat, ...] = (
            self.openai,
            self.anthropic,
            self.ollama,
            self.openai_embeddings,
            self.ollama_embed,
        )
        for fmt in formats:
            app.router.add_post(fmt.path, self._handler(fmt))
        for bound in (self.azure, self.gemini, self.bedrock):
            for route in bound.routes:
                app.router.add_post(route, self._bound_handler(bound))
        app.router.add_get("/v1/models", self._openai_models)
        ControlApi(self).add_routes(app)
        TokenEndpoints(self).add_routes(app)
        return app

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False
    ) -> None:
        """Listen on host:port (0 picks a free port); `reuse_port` lets several processes
        share the port (SO_REUSEPORT)."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        # Cancelling a handler when its client leaves is what lets a stream notice the
        # disconnect at once instead of at its next write.
        runner = web.AppRunner(
            self.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        sock = _listening_socket(host, port, reuse_port)
        await web.SockSite(runner, sock).start()
        self._runner, self._host, self._port = runner, host, sock.getsockname()[1]
        server = runner.server
        self.stats.connection_counter = lambda: len(server.connections) if server else 0

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def base_url(self) -> str:
        """`http://host:port`; an OpenAI client's base_url is this plus `/v1`."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # -- test controls ----------------------------------------------------------------------

    def add_fault(self, rule: FaultRule) -> None:
        self.faults.add(rule)

    def clear_faults(self) -> None:
        self.faults.clear()

    def discard_fault(self, rule: FaultRule) -> None:
        """Forget `rule` if it has not fired its `times` yet."""
        self.faults.discard(rule)

    def reset(self) -> None:
        """Forget faults, stats and cached prompts (connection and stream gauges stay live)."""
        self.faults.clear()
        self.stats.reset()
        self.prompt_cache.clear()

    # -- the request path -------------------------------------------------------------------

    def _handler(self, fmt: WireFormat) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._answer(request, fmt)

        return handle

    def _bound_handler(
        self, bound: BoundFormat
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            fmt = bound.bind(request, await request.read())
            if isinstance(fmt, ApiError):  # a URL the API does not serve
                return error_response(bound.errors, fmt)
            return await self._answer(request, fmt)

        return handle

    async def _openai_models(self, request: web.Request) -> web.StreamResponse:
        models = [
            {"id": name, "object": "model", "created": 0, "owned_by": "simulator"}
            for name in self.config.listed_models
        ]
        return json_response(orjson.dumps({"object": "list", "data": models}))

    async def _answer(self, request: web.Request, fmt: WireFormat) -> web.StreamResponse:
        body = _parse_body(await request.read())
        model = fmt.model_of(body)
        self.stats.record(request.method, request.path, model, request.headers, body)

        fault = self.faults.take(request.path, model)
        if fault is not None:
            early = await self._early_fault(request, fmt, fault)
            if early is not None:
                return early
        try:
            self._check(request, fmt, body, model)
        except ApiError as error:
            await self._first_byte_delay()
            return error_response(fmt, error)

        await self._first_byte_delay()
        plan = fmt.plan(body)
        if fmt.wants_stream(body):
            return await self._stream(request, fmt, body, model, plan, fault)
        if fault is not None and fault.kind == "malformed":
            return json_response(fmt.malformed_body())
        answer = fmt.unary_body(body, plan)
        if fault is not None and fault.kind == "cut":
            return await cut_unary(request, answer)
        return json_response(answer)

    async def _early_fault(
        self, request: web.Request, fmt: WireFormat, fault: FaultRule
    ) -> web.StreamResponse | None:
        """Faults that replace the answer; None lets the request go on (latency, cut,
        malformed act later)."""
        if fault.kind == "status":
            error = fmt.fault_error(fault.status, fault.message)
            return error_response(fmt, error, fault.retry_after, as_date=fault.retry_after_date)
        if fault.kind == "reset":
            reset_connection(request)
            return web.Response()  # never sent: the connection is gone
        if fault.kind == "stall":
            await stall(request, fault.seconds)
            return web.Response()
        if fault.kind == "latency":
            await asyncio.sleep(fault.seconds or 0.0)
        if fault.kind == "stream_error" and not fmt.wants_stream(_parse_body(await request.read())):
            error = fmt.fault_error(fault.status, fault.message)
            return error_response(fmt, error, fault.retry_after)
        return None

    def _check(self, request: web.Request, fmt: WireFormat, body: Any, model: str | None) -> None:
        error = fmt.check_headers(request.headers)
        if error is not None:
            raise error
        if self.config.api_key is not None:
            error = fmt.check_auth(request.headers, self.config.api_key)
            if error is not None:
                raise error
        fmt.validate(body)
        if model is not None and model in self.config.unknown_models:
            raise fmt.model_not_found(model)

    async def _first_byte_delay(self) -> None:
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)

    async def _stream(
        self,
        request: web.Request,
        fmt: WireFormat,
        body: Any,
        model: str | None,
        plan: ReplyPlan,
        fault: FaultRule | None,
    ) -> web.StreamResponse:
        kind = fault.kind if fault is not None else None
        response = web.StreamResponse(headers=STREAM_HEADERS)
        response.content_type = fmt.stream_content_type
        writer = StreamWriter(
            response,
            self.config.tokens_per_second,
            cut_after=fault.after_chunks if fault is not None and kind == "cut" else None,
            malformed=(fault.after_chunks, fmt.malformed_event())
            if fault is not None and kind == "malformed"
            else None,
            hold=(fault.after_chunks, fault.seconds)
            if fault is not None and kind == "hold"
            else None,
        )
        events = fmt.stream_events(body, plan)
        if fault is not None and kind == "stream_error":
            events = _failing(fmt, events, fault)
            if events[-1].data == b"":  # no error event in this format: a cut
                writer.cut_after = len(events) - 1
        self.stats.streams_in_flight += 1
        try:
            await response.prepare(request)
            if not await writer.write(request, events):
                return response  # cut on purpose: not a client disconnect
            await response.write_eof()
        except asyncio.CancelledError:
            self.stats.record_disconnect(request.path, model, writer.sent)
            raise
        except ConnectionResetError:  # the client left between two writes
            self.stats.record_disconnect(request.path, model, writer.sent)
        finally:
            self.stats.streams_in_flight -= 1
        return response


def _failing(fmt: WireFormat, events: list[StreamEvent], fault: FaultRule) -> list[StreamEvent]:
    """The stream's first `after_chunks` events, then its error event (empty without one)."""
    error_event = getattr(fmt, "error_event", None)
    last = error_event(fmt.fault_error(fault.status, fault.message)) if error_event else b""
    return [*events[: fault.after_chunks], StreamEvent(last)]


def _listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock
