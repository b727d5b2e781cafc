"""``ztauthz injector serve``: run the sidecar injection webhook."""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from pathlib import Path

from app.cli_common import EXIT_OK, HelpFormatter, add_command
from app.cli_common import EXIT_USAGE as EXIT_CONFIG


def add_injector_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``injector serve``; it sets ``func(args) -> exit code`` like the other commands."""
    injector = add_command(
        subparsers,
        "injector",
        "the Kubernetes sidecar injection webhook",
        "The Kubernetes mutating admission webhook that adds ztauthz and Envoy to the pods "
        "that ask.",
    )
    commands = injector.add_subparsers(dest="injector_command", required=True, metavar="COMMAND")
    serve = add_command(
        commands,
        "serve",
        "serve the webhook over TLS",
        "Serve POST /inject/namespace, POST /inject/pod and GET /healthz over HTTPS. Prints "
        "the base URL on stdout once listening; exits 2 on an invalid configuration or a "
        "certificate or port it cannot use.",
    )
    serve.add_argument("--cert", type=Path, required=True, help="TLS certificate (PEM)")
    serve.add_argument("--key", type=Path, required=True, help="TLS private key (PEM)")
    serve.add_argument("--config", type=Path, required=True, help="injector configuration YAML")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind")  # noqa: S104
    serve.add_argument("--port", type=int, default=8443, help="port to listen on (0: any free)")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="the least severe log record written to stderr",
    )
    serve.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from app.injector.config import InjectorConfigError, load_injector_config
    from app.injector.server import serve_injector

    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_injector_config(args.config)
    except InjectorConfigError as exc:
        print(f"ztauthz injector: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        serve_injector(
            config,
            cert=args.cert,
            key=args.key,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
        )
    except (OSError, ssl.SSLError) as exc:
        print(f"ztauthz injector: cannot serve: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m app.injector serve ...``: the same command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="ztauthz", formatter_class=HelpFormatter)
    add_injector_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["injector", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))
