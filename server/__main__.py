"""`python -m server`: run the gateway.

With no config it runs the embedded default: the built-in upstream simulator in
the same process and a model (`sim-gpt`) backed by it, auth on with the
demo key `demo-key`, on 127.0.0.1:50051. With `--config` (or AI_SERVICE_CONFIG)
it runs what the YAML file declares.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from server.app import Gateway, serve_until_signalled
from server.config import (
    CONFIG_ENV_VAR,
    DEMO_KEY,
    ConfigError,
    embedded_default,
    load_config,
    with_listen,
)
from server.observability.logging import configure_logging

log = logging.getLogger("server")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ai-service", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV_VAR),
        help=f"YAML config file (default: ${CONFIG_ENV_VAR}; none: the embedded demo default)",
    )
    parser.add_argument("--listen", help="HOST:PORT to serve gRPC on (overrides the config)")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--log-format", default="json", choices=["json", "text"])
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    if args.config:
        config = load_config(args.config)
        if args.listen:
            config = with_listen(config, args.listen)
        await _serve(Gateway(config))
        return

    from server.simulator import Simulator, SimulatorConfig

    async with Simulator(SimulatorConfig(latency_ms=20, tokens_per_second=50)) as simulator:
        config = embedded_default(simulator.base_url, listen=args.listen or "127.0.0.1:50051")
        gateway = Gateway(config)
        await gateway.start()
        print(_banner(gateway.address, simulator.base_url), flush=True)
        await serve_until_signalled(gateway)


async def _serve(gateway: Gateway) -> None:
    await gateway.start()
    await serve_until_signalled(gateway)


def _banner(address: str, simulator_url: str) -> str:
    return (
        f"ai-service is serving on {address} (embedded default: upstream simulator at "
        f"{simulator_url})\n"
        f"demo caller key: {DEMO_KEY}\n"
        f"try: grpcurl -plaintext -H 'authorization: Bearer {DEMO_KEY}' -d "
        f'\'{{"model": "sim-gpt", "messages": [{{"role": "user", "content": "hello"}}]}}\' '
        f"{address} ai_service.v1.AIService/ChatCompletion"
    )


def _run_on_fastest_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional on platforms that lack it
        asyncio.run(main)
        return
    uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, json=args.log_format == "json")
    try:
        _run_on_fastest_loop(run(args))
    except ConfigError as exc:
        print(f"ai-service: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ai-service: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
