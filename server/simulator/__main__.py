"""`python -m ai_service.simulator` / `ai-simulator`: run the upstream simulator alone.

`--workers N` forks N processes that each bind the port with SO_REUSEPORT (the kernel
spreads connections across them); each has its own stats and faults, so the control API
then reflects only the process that happened to accept the control connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence

from .app import Simulator
from .config import SimulatorConfig


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ai-simulator",
        description=(
            "A simulated model API: the OpenAI, Anthropic, Ollama, Azure OpenAI, Gemini, "
            "Vertex AI and Bedrock wire formats, and the clouds' token endpoints."
        ),
    )
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 8080))
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-second", type=float, default=0.0)
    parser.add_argument("--api-key", default=os.environ.get("AI_SIMULATOR_API_KEY"))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--fault-seed", type=int, default=None)
    parser.add_argument(
        "--token-lifetime",
        type=float,
        default=3599.0,
        help="seconds the access tokens and STS credentials it issues live",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.workers > 1 and args.listen[1] == 0:
        parser.error("--workers needs an explicit port")
    return args


async def serve(host: str, port: int, config: SimulatorConfig, reuse_port: bool) -> None:
    """Run until SIGINT or SIGTERM, then stop accepting and close."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    sim = Simulator(config)
    await sim.start(host, port, reuse_port=reuse_port)
    print(f"simulator pid {os.getpid()} on {sim.base_url}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def run_worker(host: str, port: int, config: SimulatorConfig, reuse_port: bool) -> None:
    try:
        import uvloop
    except ImportError:  # optional: the simulator works on the default loop too
        asyncio.run(serve(host, port, config, reuse_port))
    else:
        uvloop.run(serve(host, port, config, reuse_port))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    host, port = args.listen
    config = SimulatorConfig(
        latency_ms=args.latency_ms,
        tokens_per_second=args.tokens_per_second,
        api_key=args.api_key,
        fault_seed=args.fault_seed,
        token_lifetime_seconds=args.token_lifetime,
    )
    if args.workers == 1:
        run_worker(host, port, config, reuse_port=False)
        return
    # Fork before any event loop exists; each child binds its own SO_REUSEPORT socket.
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=run_worker, args=(host, port, config, True), daemon=True)
        for _ in range(args.workers)
    ]
    for worker in workers:
        worker.start()

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
