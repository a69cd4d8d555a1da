"""`python -m ai_service`: run the gateway.

With no config it runs the embedded default: the built-in upstream simulator in
the same process and one model per provider kind backed by it (`sim-gpt`,
`sim-claude`, `sim-llama`, `sim-azure`, `sim-gemini`, `sim-bedrock`), auth on with the
demo key `demo-key`, gRPC on 127.0.0.1:50051 and the HTTP door (OpenAI- and
Anthropic-compatible APIs) on 127.0.0.1:50080. With `--config` (or AI_SERVICE_CONFIG)
it runs what the YAML file declares.
"""

from __future__ import annotations

import signal

# A SIGHUP (a reload, perhaps passed on by the supervisor to a worker it just started)
# must not kill the process while it is still importing, nor be lost if it comes after
# the config was read: blocked, it waits until `serve_until_signalled` (or a
# supervisor) handles it, and a reload pending from the start is applied once started.
signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGHUP,))

import argparse
import asyncio
import functools
import importlib.util
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

#: What the gateway needs beyond a client-only install (`pip install ai-service`).
_GATEWAY_MODULES = (
    "pydantic",
    "yaml",
    "aiohttp",
    "httptools",
    "uvicorn",
    "prometheus_client",
    "redis",
)
if _missing := [name for name in _GATEWAY_MODULES if importlib.util.find_spec(name) is None]:
    sys.exit(
        f"ai-service: the gateway needs its extra (missing: {', '.join(_missing)}): "
        "pip install 'ai-service[gateway]'"
    )

from ai_service import __version__
from ai_service.config import (
    CONFIG_ENV_VAR,
    DEMO_KEY,
    EMBEDDED_HTTP_LISTEN,
    ConfigError,
    GatewayConfig,
    embedded_default,
    load_config,
    split_host_port,
    with_http_listen,
    with_listen,
    with_metrics_listen,
)
from ai_service.observability.logging import configure_logging
from ai_service.runtime.cpus import usable_cpus
from ai_service.runtime.gateway import Gateway
from ai_service.runtime.preflight import problems, require_startable, worker_problems
from ai_service.runtime.signals import serve_until_signalled
from ai_service.runtime.supervisor import Supervisor

log = logging.getLogger("ai_service")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ai-service",
        description=__doc__.split("\n")[0],
        epilog="`ai-service check --config FILE` checks a config without starting.",
    )
    parser.add_argument("--version", action="version", version=f"ai-service {__version__}")
    parser.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV_VAR),
        help=f"YAML config file (default: ${CONFIG_ENV_VAR}; none: the embedded demo default)",
    )
    parser.add_argument("--listen", help="HOST:PORT to serve gRPC on (overrides the config)")
    parser.add_argument(
        "--http-listen",
        help="HOST:PORT to serve the HTTP door on: OpenAI- and Anthropic-compatible APIs "
        f"(overrides the config; the embedded default serves it on {EMBEDDED_HTTP_LISTEN})",
    )
    parser.add_argument(
        "--metrics-listen",
        help="HOST:PORT to serve Prometheus /metrics on (default 127.0.0.1:9464; overrides "
        "the config)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--log-format", default="json", choices=["json", "text"])
    parser.add_argument(
        "--workers",
        type=int,
        help="gateway processes sharing the port (default: one per CPU this process may use "
        "- its affinity and cgroup quota - with --config, one for the embedded demo default)",
    )
    # Set by the supervisor for its workers: share the port on purpose.
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = usable_cpus() if args.config else 1
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def _file_config(path: str, args: argparse.Namespace) -> GatewayConfig:
    """The config file with the command line's flags applied (at start and on every
    reload, so that a reload sees no change the file did not make)."""
    config = load_config(path)
    if args.listen:
        config = with_listen(config, args.listen)
    return _with_listen_flags(config, args)


def _with_listen_flags(config: GatewayConfig, args: argparse.Namespace) -> GatewayConfig:
    """`--http-listen` and `--metrics-listen`, where given."""
    if args.http_listen:
        config = with_http_listen(config, args.http_listen)
    return with_metrics_listen(config, args.metrics_listen) if args.metrics_listen else config


async def run(args: argparse.Namespace) -> None:
    if args.config:
        load = functools.partial(_file_config, args=args)
        config = load(args.config)
        require_startable(config)
        gateway = Gateway(config, reuse_port=args.reuse_port, load=load)
        await serve_until_signalled(gateway, args.config)
        return

    from ai_service.simulator import Simulator, SimulatorConfig

    async with Simulator(SimulatorConfig(latency_ms=20, tokens_per_second=50)) as simulator:
        config = embedded_default(
            simulator.base_url,
            listen=args.listen or "127.0.0.1:50051",
            http_listen=args.http_listen or EMBEDDED_HTTP_LISTEN,
        )
        config = _with_listen_flags(config, args)
        gateway = Gateway(config, reuse_port=args.reuse_port)
        await serve_until_signalled(
            gateway,
            on_started=lambda: print(
                _banner(gateway.address, gateway.http_address, simulator.base_url), flush=True
            ),
        )


def _banner(address: str, http_address: str | None, simulator_url: str) -> str:
    lines = [
        f"ai-service is serving on {address} (embedded default: upstream simulator at "
        f"{simulator_url})",
        f"demo caller key: {DEMO_KEY}",
        f"try: grpcurl -plaintext -H 'authorization: Bearer {DEMO_KEY}' -d "
        f'\'{{"model": "sim-gpt", "messages": [{{"role": "user", "content": "hello"}}]}}\' '
        f"{address} ai_service.v1.AIService/ChatCompletion",
    ]
    if http_address is not None:
        lines.append(
            f"HTTP door (OpenAI and Anthropic APIs) on http://{http_address}: "
            f"OpenAI(base_url='http://{http_address}/v1', api_key='{DEMO_KEY}')"
        )
    return "\n".join(lines)


def _run_on_fastest_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional on platforms that lack it
        asyncio.run(main)
        return
    uvloop.run(main)


def supervise(args: argparse.Namespace, argv: list[str]) -> int:
    """Validate once here, then run `args.workers` workers on the same port."""
    grace = 30.0
    if args.config:
        config = _file_config(args.config, args)
        require_startable(config)  # once here, not in every worker restarted in a loop
        if found := worker_problems(config, args.workers):
            raise ConfigError(*found)
        listen, grace = config.server.listen, config.server.shutdown_grace_seconds
        http_listen = config.server.http.listen
    else:
        listen = args.listen or "127.0.0.1:50051"
        http_listen = args.http_listen or EMBEDDED_HTTP_LISTEN
    if split_host_port(listen)[1] == 0:
        raise ConfigError("server.listen: --workers needs a fixed port, not 0")
    if http_listen is not None and split_host_port(http_listen)[1] == 0:
        raise ConfigError("server.http.listen: --workers needs a fixed port, not 0")
    return Supervisor(_without_workers_flag(argv), args.workers, grace).run()


def _without_workers_flag(argv: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            kept.append(arg)
    return kept


def check(argv: list[str]) -> int:
    """`ai-service check --config FILE`: 0 when the config would start, else 2 and why."""
    parser = argparse.ArgumentParser(
        prog="ai-service check",
        description="Check a config file as a start would, without starting: its YAML, "
        "environment variables, every field, TLS files, the audit path.",
    )
    parser.add_argument("--config", default=os.environ.get(CONFIG_ENV_VAR), required=False)
    parser.add_argument("--listen", help="as for a start: checked with this address")
    parser.add_argument("--http-listen", help="as for a start")
    parser.add_argument("--metrics-listen", help="as for a start")
    args = parser.parse_args(argv)
    if not args.config:
        parser.error(f"--config FILE is required (or set {CONFIG_ENV_VAR})")
    try:
        config = _file_config(args.config, args)
    except ConfigError as exc:
        found = list(exc.problems)
    else:
        found = problems(config)
    if found:
        for problem in found:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return 2
    http = config.server.http.listen
    print(
        f"{args.config}: OK ({len(config.providers)} providers, {len(config.models)} models, "
        f"{len(config.auth.keys)} caller keys, listening on {config.server.listen}"
        + (f", HTTP door on {http})" if http is not None else ")")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        return check(argv[1:])
    args = parse_args(argv)
    configure_logging(args.log_level, json=args.log_format == "json")
    try:
        if args.workers > 1:
            return supervise(args, argv)
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
