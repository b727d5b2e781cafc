"""The ``ztauthz`` command line: serve | policy check | policy test | explain | revoke | dev ..."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from app import __version__
from app.cli_policy import add_policy_commands
from app.cli_revoke import add_revoke_command
from app.injector.cli import add_injector_command

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_CONFIG = 2


def _cmd_serve(args: argparse.Namespace) -> int:
    from app.main import event_loop_factory, serve
    from app.policy.loader import PolicyLoadError
    from app.settings import ConfigError, load_settings
    from app.telemetry.logging import configure_logging

    try:
        settings = load_settings(Path(args.config))
    except ConfigError as exc:
        print(f"ztauthz: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level)  # JSON lines on stderr; decisions go to stdout
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve(settings))
    except ConfigError as exc:  # found while building telemetry (OTEL_*, subject hash key)
        print(f"ztauthz: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except PolicyLoadError as exc:
        problems = "\n".join(str(p) for p in exc.problems)
        print(f"ztauthz: invalid policies:\n{problems}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def build_parser(with_dev: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ztauthz", description="Zero-trust authorization sidecar for Envoy ext_authz."
    )
    parser.add_argument("--version", action="version", version=f"ztauthz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the ext_authz check service")
    serve.add_argument("--config", required=True, help="YAML configuration file")
    serve.set_defaults(func=_cmd_serve)

    policy = sub.add_parser("policy", help="policy tooling")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    add_policy_commands(policy_sub, sub)  # policy check | policy test, and explain
    add_injector_command(sub)  # the Kubernetes sidecar injection webhook
    add_revoke_command(sub)  # the kill switch, through a running ztauthz's admin API

    if with_dev:
        # Imported only for `ztauthz dev ...`: the dev issuer is never reachable from `serve`.
        from app.dev.cli import add_dev_commands

        add_dev_commands(sub)
    else:
        sub.add_parser("dev", help="local development tools (dev issuer, tokens, demo stack)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_dev=bool(args_list) and args_list[0] == "dev")
    args = parser.parse_args(args_list)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
