"""`python -m bench.hotpath` / `make hotpath`: what each piece of a call costs, hot and cold.

In place, a call's code never runs hot: between two steps of one call the event loop
runs other calls, gRPC's threads, the simulator and the load generator share the
cores, and the interpreter's and the CPU's caches hold something else by the time the
call comes back. Measured here, the gateway's pipeline runs ~3x slower that way than
in a tight loop, which is about what it costs at saturation: so a change to the hot
path is judged cold. Each piece below runs in-process (the bench config: auth and the
limiter on, every other feature off) with the upstream exchange answered from memory
(a canned OpenAI answer behind the HTTP client seam), `--calls` times back to back
(hot) and `--calls` times with 8 MiB of memory and some unrelated Python touched
before each call (cold); the median of each, the median over `--rounds` rounds.
A piece ending `+ x` includes x: the own cost of a layer is the difference.
Writes the `## Hot path, piece by piece` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, cast

import grpc
import orjson
import uvloop

from ai_service.calls.record import CallRecord, current_call
from ai_service.config import CallerKey, GatewayConfig, parse_config
from ai_service.entry.authentication import Authentication
from ai_service.entry.calls import OpenCalls
from ai_service.identity.authenticator import access
from ai_service.identity.callers import current_caller
from ai_service.interceptors import AuthInterceptor, RateLimitInterceptor
from ai_service.interceptors.arrival import Arrivals
from ai_service.interceptors.telemetry import TelemetryInterceptor
from ai_service.pipeline.core import ServiceCore
from ai_service.pipeline.dispatch import guarded_complete
from ai_service.pipeline.service import AIService
from ai_service.pipeline.state import ServiceState
from ai_service.providers.openai import OpenAIProvider
from ai_service.resilience import Budget
from ai_service.runtime.gateway import Gateway
from ai_service_protos.ai_service_pb2 import ChatCompletionRequest
from bench import report, stack
from bench.__main__ import written_by

BENCH_DIR = Path(__file__).resolve().parent
#: Touched between two cold calls: more than this machine's caches hold.
_SCRATCH = bytearray(8 * 2**20)
_ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": stack.UPSTREAM_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(["word"] * 16)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 16, "total_tokens": 25},
    }
)
#: A streamed answer as OpenAI sends it, one event per read (a paced upstream).
_STREAM_WORDS = 20
_STREAM_EVENTS = [
    b"data: " + orjson.dumps(event) + b"\n\n"
    for event in [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        *({"choices": [{"index": 0, "delta": {"content": "word "}}]} for _ in range(_STREAM_WORDS)),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 20}},
    ]
] + [b"data: [DONE]\n\n"]
_METHOD = "/ai_service.v1.AIService/ChatCompletion"

Piece = Callable[[], Awaitable[object]]


def _evict_caches() -> None:
    _SCRATCH[::64] = b"\x01" * (len(_SCRATCH) // 64)
    {i: str(i) for i in range(3000)}  # unrelated Python, as other calls run in place


class _CannedResponse:
    status = 200

    def header(self, name: str) -> str | None:
        return None

    async def read(self) -> bytes:
        return _ANSWER

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        for event in _STREAM_EVENTS:
            yield event


class _CannedExchange:
    """What `post` returns: like `h1`'s exchange, a small async context manager class."""

    async def __aenter__(self) -> _CannedResponse:
        return _CannedResponse()  # `read()` for a unary call, `iter_bytes()` for a stream

    async def __aexit__(self, *exc_info: object) -> None:
        pass


class _CannedClient:
    """The HTTP client seam answered from memory: only the gateway's own code runs."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> _CannedExchange:
        return _CannedExchange()

    def get(self, url: str, headers: Mapping[str, str]) -> _CannedExchange:
        return _CannedExchange()

    async def aclose(self) -> None:
        pass


class _Context:
    """What the servicer asks of a grpc.aio context on a call's success path."""

    def __init__(self, message: bytes = b"") -> None:
        self._trailers: tuple[tuple[str, str], ...] = ()
        self._message = message

    async def read(self) -> bytes:
        """The request message, as the telemetry interceptor reads it."""
        return self._message

    def time_remaining(self) -> float | None:
        return None

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._trailers = metadata

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailers


class _Details:
    method = _METHOD
    invocation_metadata = (
        ("user-agent", "grpc-c/1.85"),
        ("authorization", f"Bearer {stack.BENCH_KEY}"),
    )


_DETAILS = cast(grpc.HandlerCallDetails, _Details())


def _context(message: bytes = b"") -> grpc.aio.ServicerContext[Any, Any]:
    return cast(grpc.aio.ServicerContext[Any, Any], _Context(message))


async def _median_us(piece: Piece, calls: int, cold: bool) -> float:
    took = []
    for _ in range(calls):
        if cold:
            _evict_caches()
        started = time.perf_counter()
        await piece()
        took.append(time.perf_counter() - started)
    return statistics.median(took) * 1e6


def _with_keys(config: GatewayConfig, extra: int) -> GatewayConfig:
    """`config` with `extra` more caller keys before its own."""
    keys = tuple(CallerKey(name=f"other-{i}", key=f"other-key-{i:06d}") for i in range(extra))
    auth = config.auth.model_copy(update={"keys": keys + config.auth.keys})
    return config.model_copy(update={"auth": auth})


async def _pieces(gateway: Gateway) -> dict[str, Piece]:
    runtime = gateway.runtime
    assert runtime is not None
    for provider in runtime.providers.values():
        assert isinstance(provider, OpenAIProvider)
        provider._endpoint._http = _CannedClient()  # the seam, answered from memory
    core = ServiceCore(
        ServiceState.build(gateway.config, runtime.router, runtime.answers, runtime.usage)
    )
    service = AIService(core, gateway.config.server.max_send_message_bytes)
    state = core.state
    request = stack.chat_request()
    auth = AuthInterceptor(Authentication(*access(gateway.config)))
    rate_limit = RateLimitInterceptor(gateway.limiter)
    telemetry = TelemetryInterceptor(OpenCalls(()), Arrivals(10.0, 1000))
    request_bytes = request.SerializeToString()

    async def behaviour(request: ChatCompletionRequest, context: Any) -> object:
        return request

    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(behaviour)

    async def continuation(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        return handler

    await auth.intercept_service(continuation, _DETAILS)  # sets current_caller
    caller = current_caller.get()
    # The same key among 1,000: what finding a key costs when many are configured.
    many_keys = AuthInterceptor(Authentication(*access(_with_keys(gateway.config, 999))))
    record = CallRecord((), "request-id", "ChatCompletion", streaming=False)
    current_call.set(record)  # as the telemetry interceptor leaves it for the pipeline
    route = state.router.resolve(request.model, caller)
    handle = route.deployments[0].handle
    budget = Budget.for_call(None, 3600.0)

    async def telemetry_piece() -> object:
        wrapped = await telemetry.intercept_service(continuation, _DETAILS)
        assert wrapped is not None and wrapped.stream_unary is not None
        # The stubs type an aio behaviour as the sync one; it reads the request itself.
        answer = await wrapped.stream_unary(None, _context(request_bytes))  # type: ignore[arg-type]
        current_call.set(record)  # the interceptor set its own: the pieces below use ours
        return answer

    async def attempt() -> object:
        record.attempts.clear()
        admission = handle.breaker.admit()
        assert admission is not None
        return await guarded_complete(handle, admission, request, budget)

    async def dispatch() -> object:
        record.attempts.clear()
        return await runtime.dispatcher.dispatch(request, route, budget)

    async def completions() -> object:
        record.attempts.clear()
        return await runtime.answers.answer(request, route, budget, caller)

    async def bound() -> None:
        with Budget.for_call(None, state.default_deadline).bound(state.timers):
            pass

    async def admission() -> object:
        return await ServiceCore._admit(state, request, caller)

    async def servicer() -> object:
        record.attempts.clear()
        return await service.ChatCompletion(request, _context())

    async def adapter() -> object:
        return await handle.provider.complete(request, handle.target)

    async def adapter_stream() -> None:
        async with contextlib.aclosing(handle.provider.stream(request, handle.target)) as chunks:
            async for _ in chunks:
                pass

    async def servicer_stream() -> None:
        record.attempts.clear()
        async for _ in service.StreamChatCompletion(request, _context()):
            pass

    return {
        "interceptor: telemetry (record, request id, end)": telemetry_piece,
        "interceptor: auth (key digest lookup)": lambda: auth.intercept_service(
            continuation, _DETAILS
        ),
        "interceptor: auth, 1,000 keys configured": lambda: many_keys.intercept_service(
            continuation, _DETAILS
        ),
        "interceptor: rate limit (token bucket)": lambda: rate_limit.intercept_service(
            continuation, _DETAILS
        ),
        "admission (validation, routing, redaction)": admission,
        "deadline budget (bound entered and left)": bound,
        "adapter (request JSON, answer translated)": adapter,
        "attempt (breaker, slot, observation) + adapter": attempt,
        "dispatch (candidates, retries) + attempt": dispatch,
        "completions (cache, token quota) + dispatch": completions,
        "servicer: the whole unary call": servicer,
        f"adapter: a stream of {_STREAM_WORDS} words (SSE in, chunks out)": adapter_stream,
        f"servicer: the whole stream of {_STREAM_WORDS} words": servicer_stream,
    }


async def measure(calls: int, rounds: int) -> list[tuple[str, float, float]]:
    tree = stack.gateway_tree("http://127.0.0.1:9")  # never reached: the seam answers
    async with Gateway(parse_config(tree, env={})) as gateway:
        pieces = await _pieces(gateway)
        rows = []
        for name, piece in pieces.items():
            for _ in range(calls // 4):  # warm up: code paths, pools, caches of our own
                await piece()
            hot = [await _median_us(piece, calls, cold=False) for _ in range(rounds)]
            cold = [await _median_us(piece, calls, cold=True) for _ in range(rounds)]
            rows.append((name, statistics.median(hot), statistics.median(cold)))
            print(f"  {name:<50} hot {rows[-1][1]:6.1f} µs  cold {rows[-1][2]:6.1f} µs")
        return rows


def section(rows: list[tuple[str, float, float]], calls: int, rounds: int) -> list[str]:
    return [
        report.HOTPATH_HEADING,
        "",
        f"{written_by('bench.hotpath')}: "
        f"each piece of a call in-process (auth and limiter on, the upstream answered "
        f"from memory behind the HTTP client seam), median µs of {calls} calls, median of "
        f"{rounds} rounds; hot is back to back, cold with 8 MiB and some unrelated Python "
        f"touched before each call, as in place. A row ending `+ x` includes x; the whole "
        f"call includes admission, the budget and completions.",
        "",
        "| piece | hot µs | cold µs |",
        "|---|---:|---:|",
        *(f"| {name} | {hot:.1f} | {cold:.1f} |" for name, hot, cold in rows),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.hotpath", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1500, help="calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    rows = uvloop.run(measure(args.calls, args.rounds))
    lines = section(rows, args.calls, args.rounds)
    report.replace_section(args.output, report.HOTPATH_HEADING, lines)
    print(f"wrote the hot path section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
