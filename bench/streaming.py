"""The streaming load driver, run in its own process: `python -m bench.streaming ...`.

Two sides with the same loop: `grpc` (StreamChatCompletion through the gateway, raw
`grpc.aio` stubs on uvloop, so the client stays thin) and `http` (the same request straight
to the simulator as OpenAI SSE, read with aiohttp). Two modes:

- `run`: `--concurrency` workers open stream after stream for `--warmup` + `--duration`
  seconds; prints JSON with time to first token (first chunk with a word) percentiles,
  tokens (words) received per second in the measured window, and failures by kind.
  `--stagger-ms N`: each stream starts after a random pause of up to N ms (not part of
  its TTFT). A worker that opens its next stream the moment the last one ends stays in
  step with the simulator's timers, which keep whole milliseconds (uvloop), so every
  sample of a side comes out early or late by the same part of a millisecond; measured
  here, that made the direct side ~0.5 ms slower than with random phases.
- `hold`: opens `--streams` slow streams (in batches of `--ramp`), waits until each has
  its first token, prints one JSON line `{"held": …}`, keeps them open until stdin
  closes (or `--hold-timeout`), then cancels them all and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import orjson

from ai_service_protos import ai_service_pb2_grpc as pb_grpc
from bench.stack import BENCH_KEY, chat_request, openai_body

#: The gateway's default `server.max_concurrent_streams` per connection: a client holding
#: more streams than that opens more connections (gRPC queues the rest, unstarted).
STREAMS_PER_CHANNEL = 100
RAMP_BATCH = 250


@dataclass
class Tally:
    ttft_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    streams: int = 0
    failures: Counter[str] = field(default_factory=Counter)


TokenStream = Callable[[], AsyncIterator[int]]


class GrpcSide:
    """Streams through the gateway; one channel per STREAMS_PER_CHANNEL concurrent streams."""

    def __init__(self, target: str, prompt: str, auth: bool, channels: int) -> None:
        self.channels = [
            grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(max(1, channels))
        ]
        self.stubs = [pb_grpc.AIServiceStub(ch) for ch in self.channels]
        self.request = chat_request(prompt)
        self.metadata = (("authorization", f"Bearer {BENCH_KEY}"),) if auth else ()

    async def tokens(self, slot: int) -> AsyncIterator[int]:
        """Yields the number of tokens (words) of each chunk as it arrives.

        Words, not chunks: the gateway may coalesce several upstream events into one chunk.
        """
        call = self.stubs[slot % len(self.stubs)].StreamChatCompletion(
            self.request, metadata=self.metadata, timeout=900
        )
        try:
            async for chunk in call:
                yield len(chunk.choices[0].delta.content.split()) if chunk.choices else 0
        finally:
            call.cancel()

    async def close(self) -> None:
        await asyncio.gather(*(ch.close(0) for ch in self.channels))


class HttpSide:
    """The same request straight to the simulator as an OpenAI SSE stream."""

    def __init__(self, base_url: str, prompt: str, model: str | None, api_key: str | None):
        body = openai_body(prompt, stream=True)
        if model:
            body["model"] = model
        self.body = orjson.dumps(body)
        self.url = f"{base_url}/v1/chat/completions"
        self.headers = {"content-type": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=900)
        )

    async def tokens(self, slot: int) -> AsyncIterator[int]:
        async with self.session.post(self.url, data=self.body, headers=self.headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}")
            async for line in resp.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                event: dict[str, Any] = orjson.loads(line[6:])
                choices = event.get("choices") or []
                text = (choices[0].get("delta") or {}).get("content") if choices else None
                yield len(text.split()) if text else 0

    async def close(self) -> None:
        await self.session.close()


def failure_name(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code().name
    return type(error).__name__


async def run_mode(side: GrpcSide | HttpSide, args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    start = time.monotonic()
    measure_from = start + args.warmup
    stop_at = measure_from + args.duration

    stagger = args.stagger_ms / 1000

    async def worker(slot: int) -> None:
        while time.monotonic() < stop_at:
            if stagger:
                await asyncio.sleep(random.uniform(0, stagger))
            began = time.monotonic()
            measured = began >= measure_from
            first = True
            try:
                async for n in side.tokens(slot):
                    now = time.monotonic()
                    if n and first:
                        first = False
                        if measured:
                            tally.ttft_ms.append((now - began) * 1000)
                    if measure_from <= now < stop_at:
                        tally.tokens += n
                if measured:
                    tally.streams += 1
            except Exception as error:
                if measured:
                    tally.failures[failure_name(error)] += 1

    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    return {
        "streams": tally.streams,
        "tokens": tally.tokens,
        "tokens_per_second": tally.tokens / args.duration,
        "ttft": percentiles(tally.ttft_ms),
        "failures": dict(tally.failures),
    }


async def hold_mode(side: GrpcSide | HttpSide, args: argparse.Namespace) -> dict[str, Any]:
    first_token: list[asyncio.Future[None]] = []
    failures: Counter[str] = Counter()
    loop = asyncio.get_running_loop()

    async def one(slot: int, got_first: asyncio.Future[None]) -> None:
        try:
            async for n in side.tokens(slot):
                if n and not got_first.done():
                    got_first.set_result(None)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failures[failure_name(error)] += 1
        finally:
            if not got_first.done():
                got_first.set_result(None)

    tasks = []
    began = time.monotonic()
    # Ramp up in batches: a burst of thousands of new upstream connections at once would
    # overflow the simulator's listen backlog (SYN retries, connect timeouts) and measure
    # that instead of what holding the streams costs.
    for batch_start in range(0, args.streams, args.ramp):
        batch = []
        for slot in range(batch_start, min(args.streams, batch_start + args.ramp)):
            fut: asyncio.Future[None] = loop.create_future()
            first_token.append(fut)
            batch.append(fut)
            tasks.append(asyncio.create_task(one(slot, fut)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*batch), args.hold_timeout)
    held = sum(1 for t in tasks if not t.done())
    report = {
        "held": held,
        "failures": dict(failures),
        "open_seconds": time.monotonic() - began,
    }
    print(orjson.dumps(report).decode(), flush=True)
    # Keep them open until the orchestrator has measured (stdin closes) or the timeout.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.read), args.hold_timeout)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return report


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    s = sorted(samples)

    def pick(q: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

    return {"n": len(s), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": s[-1]}


async def main_async(args: argparse.Namespace) -> None:
    side: GrpcSide | HttpSide
    if args.side == "grpc":
        channels = math.ceil(max(args.streams, args.concurrency) / STREAMS_PER_CHANNEL)
        side = GrpcSide(args.target, args.prompt, not args.no_auth, channels)
    else:
        side = HttpSide(args.target, args.prompt, args.model, args.api_key)
    try:
        if args.mode == "run":
            print(orjson.dumps(await run_mode(side, args)).decode(), flush=True)
        else:
            await hold_mode(side, args)
    finally:
        await side.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.streaming", description=__doc__.split("\n")[0])
    parser.add_argument("side", choices=["grpc", "http"])
    parser.add_argument("target", help="grpc: HOST:PORT; http: the base URL, no /v1")
    parser.add_argument("--mode", choices=["run", "hold"], default="run")
    parser.add_argument("--prompt", default="/tokens 100 stream")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--streams", type=int, default=0)
    parser.add_argument("--stagger-ms", type=float, default=0.0, help="run: see the module doc")
    parser.add_argument("--ramp", type=int, default=RAMP_BATCH, help="hold: streams per batch")
    parser.add_argument("--hold-timeout", type=float, default=120.0)
    parser.add_argument("--no-auth", action="store_true")
    parser.add_argument("--model", default=None, help="http side: model name to send")
    parser.add_argument("--api-key", default=None, help="http side: bearer key to send")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_async(args))
    else:
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
