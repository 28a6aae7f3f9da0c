"""`turnout serve`, `turnout check-config`, `turnout explain` and `turnout batches`;
`python -m router` is the same."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from policies.loading import DEFAULT_CONFIG, ConfigError, load_config
from router.batches.cli import batches_command
from router.explain_cli import explain_command
from router.exposure import Listener, bind_address, check_port_free, open_access_refusal
from router.server import SERVERS, run
from router.workers import worker_count

__all__ = ["main", "open_access_refusal"]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(Path(args.path))
    if args.command == "batches":
        if args.action == "show" and not args.id:
            print("turnout batches show: give the batch's id", file=sys.stderr)
            return 2
        batch_id = args.id if args.action == "show" else None
        return batches_command(args.config or DEFAULT_CONFIG, batch_id)
    if args.command == "explain":
        return explain_command(args.config or DEFAULT_CONFIG, Path(args.request), args.team)
    return _serve(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turnout", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the router")
    serve.add_argument("--config", type=Path, default=None, help=f"default: {DEFAULT_CONFIG}")
    serve.add_argument("--host", default=None, help="default: server.host, else 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default: server.port, else 8000")
    serve.add_argument(
        "--allow-open", action="store_true", help="serve without keys on a non-loopback address"
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--server", choices=SERVERS, default=SERVERS[0], help="ASGI server (default: %(default)s)"
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help="worker processes behind the port, or auto (the CPU count); default: server.workers",
    )
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path")
    explain = commands.add_parser(
        "explain", help="print the routing plan for a request, calling no backend"
    )
    explain.add_argument("request", help="a JSON file: a request body, or an explain query")
    explain.add_argument("--config", type=Path, default=None, help=f"default: {DEFAULT_CONFIG}")
    explain.add_argument("--team", default=None, help="explain as this team would be routed")
    batches = commands.add_parser("batches", help="the batches in the configured storage")
    batches.add_argument("action", choices=["list", "show"])
    batches.add_argument("id", nargs="?", help="show: the batch's id")
    batches.add_argument("--config", type=Path, default=None, help=f"default: {DEFAULT_CONFIG}")
    return parser


def _workers(value: str) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError(f"{value!r}: a number of processes (1 or more) or auto")


def _check_config(path: Path) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"{path}: ok ({len(config.providers)} providers, {len(config.models)} models, "
        f"{len(config.keys)} keys)"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    path = args.config or DEFAULT_CONFIG
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.server == "uvicorn" and config.server.http != 1:
        print(
            f"server.http: {config.server.http} needs --server granian "
            "(uvicorn speaks HTTP/1.1 only)",
            file=sys.stderr,
        )
        return 2
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    workers = worker_count(config.server.workers, args.workers)
    refusal = Listener(host, args.allow_open, workers).refusal(config)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    try:
        address = bind_address(host, port)
        check_port_free(address, port)
    except OSError as exc:
        print(f"cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    # The name checked above may resolve to another address: the one bound must pass too.
    listener = Listener(address, args.allow_open, workers)
    refusal = listener.refusal(config)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    # The embedded default is not watched: only a file the operator chose is reloaded.
    run(
        str(path),
        listener=listener,
        port=port,
        server=args.server,
        log_level=args.log_level,
        reload=args.config is not None,
    )
    return 0
