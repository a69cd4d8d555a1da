"""The `ai-client` command: chat, list models and check health from a shell.

    ai-client chat "Why is the sky blue?" --stream
    ai-client models
    ai-client health
    ai-client keys create billing-batch --model gpt-4o-mini --rpm 60 --expires-in 30d --budget 50
    ai-client keys list
    ai-client keys revoke 3f9c0a1b2d4e5f60
    ai-client usage --since 7d
    ai-client usage billing-batch --since 2026-12-01 --until 2026-12-08
    ai-client usage --team search

The address and key come from `--addr` / `--key` or `AI_SERVICE_ADDR` /
`AI_SERVICE_KEY` (prefer the variable for the key: flags show up in `ps`). Exit
codes: 0 success, 1 a failed call (one line `error: CODE: message` on stderr) or a
health status other than SERVING, 2 a usage error, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import calendar
import os
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import TextIO

from ai_service_client._errors import AIServiceError
from ai_service_client._requests import DEFAULT, answer_text, build_chat_request
from ai_service_client._sync import AIClient
from ai_service_client._tls import TLSOptions
from ai_service_protos.ai_service_pb2 import (
    ChatCompletionRequest,
    GetUsageRequest,
    GetUsageResponse,
    IssuedKey,
    KeyBudget,
    KeyRateLimit,
    KeySpec,
    Usage,
    UsageRow,
)

__all__ = ["main"]

DEFAULT_ADDR = "127.0.0.1:50051"


def main(argv: list[str] | None = None) -> int:
    """Run the command with `argv` (default: `sys.argv[1:]`); return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        tls = _tls_options(args, parser)
        with AIClient(args.addr, args.key, tls=tls, timeout=args.timeout) as client:
            command: Callable[[AIClient, argparse.Namespace], int] = args.command
            code = command(client, args)
            sys.stdout.flush()  # here, where a closed pipe is handled, not at exit
            return code
    except (AIServiceError, ValueError) as error:  # a failed call; a key that cannot be sent
        return _fail(str(error))
    except BrokenPipeError:  # the reader left (`| head`): nothing more to say
        # What is still buffered goes nowhere, not to an error at exit (Python's advice).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:  # a certificate file that cannot be read
        where = f": {error.filename}" if error.filename else ""
        return _fail(f"{error.strerror or error}{where}")
    except KeyboardInterrupt:  # a stream was cancelled on the way out, its line ended
        return 130


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


# --- commands ---------------------------------------------------------------------------


def _chat(client: AIClient, args: argparse.Namespace) -> int:
    # Bytes that are not UTF-8 (stdin, or an argument in another locale) would fail
    # to encode for the request: they are replaced instead.
    if args.prompt == "-":
        prompt = sys.stdin.buffer.read().decode("utf-8", "replace")
    else:  # undecodable bytes reach Python as lone surrogates: only those are replaced
        prompt = args.prompt.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    model = args.model or os.environ.get("AI_SERVICE_MODEL") or _first_model(client)
    if model is None:
        return _fail("the gateway lists no models for this key; pass --model")
    request = build_chat_request(
        prompt,
        model=model,
        system=args.system,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
    )
    if args.stream:
        usage = _print_stream(client, request, sys.stdout)
    else:
        response = client.chat(request)
        print(answer_text(response))
        usage = response.usage if response.HasField("usage") else None
    if args.verbose and usage is not None:
        print(
            f"usage: prompt={usage.prompt_tokens} completion={usage.completion_tokens}"
            f" total={usage.total_tokens}",
            file=sys.stderr,
        )
    return 0


def _print_stream(client: AIClient, request: ChatCompletionRequest, out: TextIO) -> Usage | None:
    usage = None
    printed = False
    try:
        with client.stream_chat(request) as stream:
            for chunk in stream:
                for choice in chunk.choices:
                    if choice.index == 0 and choice.delta.content:
                        out.write(choice.delta.content)
                        out.flush()  # show each token as it arrives, not at the end
                        printed = True
                if chunk.HasField("usage"):
                    usage = chunk.usage
    except BaseException:
        if printed:  # end the half-printed line: an error line starts a line of its own
            out.write("\n")
        raise
    out.write("\n")
    return usage


def _first_model(client: AIClient) -> str | None:
    models = client.list_models()
    return models[0].id if models else None


def _models(client: AIClient, args: argparse.Namespace) -> int:
    models = client.list_models()
    width = max((len(m.id) for m in models), default=0)
    for model in models:
        print(f"{model.id:<{width}}  {model.provider}")
    return 0


def _health(client: AIClient, args: argparse.Namespace) -> int:
    status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def _keys_create(client: AIClient, args: argparse.Namespace) -> int:
    spec = KeySpec(
        name=args.name,
        team=args.team or "",
        models=args.model,
        roles=args.role,
        max_output_tokens=args.max_output_tokens or 0,
    )
    if args.rpm is not None or args.tpm is not None:
        spec.rate_limit.CopyFrom(
            KeyRateLimit(requests_per_minute=args.rpm or 0, tokens_per_minute=args.tpm or 0)
        )
    if args.budget is not None or args.soft_budget is not None:
        spec.budget.CopyFrom(
            KeyBudget(
                amount=args.budget or 0, period=args.budget_period, soft=args.soft_budget or 0
            )
        )
    if args.expires_in is not None:
        spec.expire_time.FromNanoseconds(int((time.time() + args.expires_in) * 1e9))
    created = client.create_key(spec)
    print(created.secret)  # alone on stdout: KEY=$(ai-client keys create ...)
    print(
        f"issued key {created.key.id} to {created.key.spec.name!r}; its secret (above) is "
        f"shown only this once",
        file=sys.stderr,
    )
    return 0


def _keys_list(client: AIClient, args: argparse.Namespace) -> int:
    keys = client.list_keys(args.team or "")
    rows = [("ID", "NAME", "TEAM", "MODELS", "EXPIRES")] + [_key_row(key) for key in keys]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _key_row(key: IssuedKey) -> tuple[str, str, str, str, str]:
    spec = key.spec
    expires = (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(spec.expire_time.seconds))
        if spec.HasField("expire_time")
        else "never"
    )
    return key.id, spec.name, spec.team or "-", ",".join(spec.models) or "all", expires


def _keys_revoke(client: AIClient, args: argparse.Namespace) -> int:
    revoked = client.revoke_key(args.id)
    print(f"revoked key {revoked.id} ({revoked.spec.name})")
    return 0


def _usage(client: AIClient, args: argparse.Namespace) -> int:
    request = GetUsageRequest(key=args.of_key or "", team=args.team or "")
    now = time.time()
    for field, when in (("since", args.since), ("until", args.until)):
        if when is not None:
            getattr(request, field).FromNanoseconds(int(when(now) * 1e9))
    report = client.get_usage(request)
    _print_usage(report, sys.stdout)
    return 0


def _print_usage(report: GetUsageResponse, out: TextIO) -> None:
    span = f"{_utc(report.since.seconds)} to {_utc(report.until.seconds)}"
    print(f"{report.scope}, {span}, in {report.currency}", file=out)
    header = ("DAY", "MODEL", "CALLS", "PROMPT", "COMPLETION", "CACHED", "CACHE_WRITE")
    rows: list[tuple[str, ...]] = [(*header, "REASONING", "COST")]
    rows += [_usage_row(row, row.day, row.model) for row in report.rows]
    rows.append(_usage_row(report.total, "total", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip(), file=out)
    total = report.total
    if total.estimated_calls:
        print(
            f"{total.estimated_calls} calls priced from an estimate (no usage reported)", file=out
        )
    if total.unpriced_calls:
        print(f"{total.unpriced_calls} calls on models without a price (not in COST)", file=out)
    if report.HasField("budget"):
        budget = report.budget
        limits = [f"{_money(budget.amount)}"] if budget.amount else []
        limits += [f"soft {_money(budget.soft)}"] if budget.soft else []
        left = f", left {_money(budget.remaining)}" if budget.amount else ""
        print(
            f"budget: {' / '.join(limits)} {report.currency} per {budget.period}; spent "
            f"{_money(budget.spent)}, held by calls in flight {_money(budget.reserved)}{left}; "
            f"starts again {_utc(budget.resets_at.seconds)}",
            file=out,
        )


def _usage_row(row: UsageRow, day: str, model: str) -> tuple[str, ...]:
    counts = (
        row.calls,
        row.prompt_tokens,
        row.completion_tokens,
        row.cached_tokens,
        row.cache_write_tokens,
        row.reasoning_tokens,
    )
    return (day, model, *(str(count) for count in counts), _money(row.cost))


def _money(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".") if value else "0"


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(seconds))


# --- arguments --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ai-client", description="Talk to the ai-service gateway."
    )
    parser.add_argument("--version", action="version", version=f"ai-client {_version()}")
    _add_connection_options(parser)
    parser.set_defaults(
        addr=os.environ.get("AI_SERVICE_ADDR") or DEFAULT_ADDR,
        key=os.environ.get("AI_SERVICE_KEY") or None,
        timeout=DEFAULT,
        tls_ca=None,
        tls_cert=None,
        tls_key=None,
        tls_server_name=None,
        verbose=False,
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    chat = commands.add_parser("chat", help="ask for a chat completion")
    chat.add_argument("prompt", help='the user message ("-" reads it from stdin)')
    chat.add_argument("--model", help="model (env AI_SERVICE_MODEL, else the first listed)")
    chat.add_argument("--system", help="a system message before the prompt")
    chat.add_argument("--max-tokens", type=_positive_int, metavar="N")
    chat.add_argument("--temperature", type=float, metavar="T")
    chat.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    chat.set_defaults(command=_chat)

    models = commands.add_parser("models", help="list the models, one per line: id  provider")
    models.set_defaults(command=_models)

    health = commands.add_parser("health", help="print the serving status; exit 1 unless SERVING")
    health.add_argument("service", nargs="?", default="", help="service name (default: server)")
    health.set_defaults(command=_health)

    keys = commands.add_parser("keys", help="issue, list and revoke keys (an admin's key)")
    actions = keys.add_subparsers(title="actions", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="issue a key; prints its secret, once")
    create.add_argument("name", help="the caller's name in logs, metrics and limits")
    create.add_argument("--team", help="the team it belongs to")
    create.add_argument("--model", action="append", default=[], help="a model it may use")
    create.add_argument("--role", action="append", default=[], help="a role from auth.roles")
    create.add_argument("--rpm", type=_natural, metavar="N", help="requests per minute (0: off)")
    create.add_argument("--tpm", type=_natural, metavar="N", help="tokens per minute (0: off)")
    create.add_argument("--max-output-tokens", type=_positive_int, metavar="N")
    create.add_argument(
        "--budget", type=_amount, metavar="AMOUNT", help="spend per period (refused past it)"
    )
    create.add_argument(
        "--soft-budget", type=_amount, metavar="AMOUNT", help="spend per period logged past it"
    )
    create.add_argument(
        "--budget-period", choices=("day", "week", "month"), default="month", help="month"
    )
    create.add_argument(
        "--expires-in", type=_duration, metavar="TIME", help="e.g. 3600, 90m, 12h, 30d"
    )
    create.set_defaults(command=_keys_create)
    listing = actions.add_parser("list", help="the issued keys: id, name, team, models, expiry")
    listing.add_argument("--team", help="only this team's keys")
    listing.set_defaults(command=_keys_list)
    revoke = actions.add_parser("revoke", help="revoke a key by its id (see list)")
    revoke.add_argument("id", help="the key's id")
    revoke.set_defaults(command=_keys_revoke)

    usage = commands.add_parser(
        "usage", help="spend, tokens and calls by day and model, and the budget left"
    )
    whose = usage.add_mutually_exclusive_group()
    whose.add_argument(
        "of_key", nargs="?", metavar="KEY", help="another key's, by name (an admin's)"
    )
    whose.add_argument("--team", metavar="NAME", help="a team's (an admin's)")
    usage.add_argument(
        "--since",
        type=_when,
        metavar="WHEN",
        help="from: YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC), or an age (90m, 12h, 7d); "
        "default the start of the budget's period, or of the month",
    )
    usage.add_argument("--until", type=_when, metavar="WHEN", help="until, as --since; default now")
    usage.set_defaults(command=_usage, of_key=None, team=None)

    for sub in (chat, models, health, create, listing, revoke, usage):
        # Connection options are accepted after the subcommand too. SUPPRESS keeps an
        # option not given there from overwriting the same option given before it.
        _add_connection_options(sub, default=argparse.SUPPRESS)
    return parser


def _add_connection_options(parser: argparse.ArgumentParser, default: object = None) -> None:
    add = parser.add_argument
    add("--addr", default=default, help=f"host:port (env AI_SERVICE_ADDR, default {DEFAULT_ADDR})")
    add("--key", default=default, help="API key (env AI_SERVICE_KEY; flags show in ps)")
    add(
        "--timeout",
        default=default,
        type=float,
        help="deadline per call, seconds (default 60; 600 for --stream)",
    )
    add("--tls-ca", default=default, metavar="FILE", help="root certificates; enables TLS")
    add("--tls-cert", default=default, metavar="FILE", help="client certificate (mTLS)")
    add("--tls-key", default=default, metavar="FILE", help="client private key (mTLS)")
    add("--tls-server-name", default=default, metavar="NAME", help="name the server cert has")
    add("-v", "--verbose", default=default, action="store_true", help="print usage on stderr")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def _amount(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text!r}")
    return value


def _natural(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """Seconds from `3600`, `90m`, `12h` or `30d`."""
    unit = _UNITS.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in _UNITS else text
    try:
        seconds = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (e.g. 3600, 90m, 12h, 30d)"
        ) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text!r}")
    return seconds


def _when(text: str) -> Callable[[float], float]:
    """A time from `2026-12-01`, `2026-12-01T12:00` (UTC) or an age (`7d`): a function of
    the time now, in seconds since the epoch."""
    for form in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            moment = calendar.timegm(time.strptime(text.removesuffix("Z"), form))
        except ValueError:
            continue
        return lambda now: float(moment)
    try:
        age = _duration(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (e.g. 2026-12-01, 2026-12-01T12:00, 7d)"
        ) from None
    return lambda now: now - age


def _tls_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> TLSOptions | None:
    if not (args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name):
        return None
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    return TLSOptions(
        root_certificates_path=args.tls_ca,
        client_certificate_path=args.tls_cert,
        client_key_path=args.tls_key,
        server_name_override=args.tls_server_name,
    )


def _version() -> str:
    try:
        return metadata.version("ai-service")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"
