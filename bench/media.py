"""`python -m bench.media` / `make media`: what a 1 MiB image costs beside a text request.

A simulator and a gateway run as processes on loopback. For each provider format that
takes images as bytes in its JSON (OpenAI's data URL, Ollama's raw base64), the same
request is sent `--calls` times one after the other through the gateway (gRPC, the
project's client) and straight to the simulator (HTTP, the body the adapter would send):
the gateway's added latency is the difference of the medians. A text request is measured
the same way, beside it. The gateway process's resident memory is read before any call,
after the text calls and after the image calls, with its high-water mark (VmHWM).
Writes the `## Content: a 1 MiB image` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from ai_service.providers.ollama import request_body as ollama_body
from ai_service.providers.openai import request_body as openai_body
from ai_service_client import AIClient
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    ContentPart,
    ImagePart,
    Message,
)
from bench import procs, report, stack
from bench.__main__ import written_by

BENCH_DIR = Path(__file__).resolve().parent
HEADING = report.MEDIA_HEADING
IMAGE_BYTES = 1024 * 1024
#: A PNG signature, then random bytes: what the bytes are does not matter on the way.
IMAGE = b"\x89PNG\r\n\x1a\n" + os.urandom(IMAGE_BYTES - 8)
#: (public model, kind, upstream model, path at the simulator).
TARGETS = (
    ("sim-gpt", "openai", "sim-gpt-1", "/v1/chat/completions"),
    ("sim-llava", "ollama", "sim-llava-1", "/api/chat"),
)


def tree(simulator_url: str) -> dict[str, Any]:
    config = stack.gateway_tree(simulator_url)
    config["providers"].append(
        {"name": "simulator-ollama", "kind": "ollama", "base_url": simulator_url}
    )
    config["models"].append(
        {"name": "sim-llava", "provider": "simulator-ollama", "upstream_model": "sim-llava-1"}
    )
    return config


def request(model: str, image: bool) -> ChatCompletionRequest:
    parts = [ContentPart(image=ImagePart(data=IMAGE, media_type="image/png"))] if image else []
    message = Message(role="user", content="What is in this picture?", parts=parts)
    return ChatCompletionRequest(model=model, messages=[message])


def upstream_body(kind: str, upstream: str, proto: ChatCompletionRequest) -> bytes:
    if kind == "openai":
        return orjson.dumps(openai_body(proto, upstream, "max_completion_tokens", stream=False))
    return orjson.dumps(ollama_body(proto, upstream, stream=False))


def timed(call: Callable[[], object], calls: int) -> list[float]:
    call()  # warm: connections, caches
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def post(http: httpx.Client, url: str, body: bytes) -> None:
    http.post(url, content=body, headers={"content-type": "application/json"}).raise_for_status()


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid`, bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def measure(calls: int, workdir: Path) -> list[str]:
    rows = []
    with stack.simulator(workdir) as sim, stack.gateway(workdir, tree(sim.http)) as gw:
        rss: dict[str, tuple[int, int]] = {"start": memory(gw.pid)}
        with AIClient(gw.address, stack.BENCH_KEY, timeout=60) as ai, httpx.Client() as http:
            for image in (False, True):
                for model, kind, upstream, path in TARGETS:
                    proto = request(model, image)
                    body = upstream_body(kind, upstream, proto)
                    via = timed(functools.partial(ai.chat, proto), calls)
                    direct = timed(functools.partial(post, http, f"{sim.http}{path}", body), calls)
                    rows.append((model, kind, image, proto.ByteSize(), len(body), via, direct))
                    print(f"  {model} image={image}: {statistics.median(via) * 1000:.2f} ms")
                rss["image" if image else "text"] = memory(gw.pid)
    return section(rows, rss, calls)


def section(rows: list[Any], rss: dict[str, tuple[int, int]], calls: int) -> list[str]:
    lines = [
        HEADING,
        "",
        written_by("bench.media"),
        "",
        f"The same chat request with and without a {IMAGE_BYTES // 1024} KiB PNG, {calls} "
        f"calls one after the other, through the gateway (gRPC) and straight to the "
        f"simulator (HTTP, the JSON body the adapter sends). Added = the difference of "
        f"the medians.",
        "",
        "| model (format) | request | gRPC bytes | upstream JSON bytes | gateway p50 | "
        "direct p50 | added p50 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for model, kind, image, grpc_size, json_size, via, direct in rows:
        added = statistics.median(via) - statistics.median(direct)
        lines.append(
            f"| {model} ({kind}) | {'1 MiB image' if image else 'text'} | {grpc_size:,} | "
            f"{json_size:,} | {statistics.median(via) * 1000:.2f} ms | "
            f"{statistics.median(direct) * 1000:.2f} ms | {added * 1000:+.2f} ms |"
        )
    mib = 1024 * 1024
    lines += [
        "",
        "Gateway process memory (VmRSS, and its high-water mark VmHWM):",
        "",
        "| after | RSS | peak |",
        "|---|---:|---:|",
    ]
    for when, label in (("start", "start"), ("text", "text calls"), ("image", "image calls")):
        resident, peak = rss[when]
        lines.append(f"| {label} | {resident / mib:.1f} MiB | {peak / mib:.1f} MiB |")
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.media", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=30, help="calls per row")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "RESULTS.md")
    args = parser.parse_args(argv)
    procs.install_teardown()
    workdir = BENCH_DIR / ".work"
    workdir.mkdir(exist_ok=True)
    lines = measure(args.calls, workdir)
    print("\n".join(lines))
    report.replace_section(args.output, HEADING, lines)
    print(f"wrote the media section of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
