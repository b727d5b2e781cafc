"""The ``ztauthz`` command line: serve | policy check | policy test | explain | revoke | injector
| dev.

Exit codes and output conventions: app/cli_common.py (docs/cli.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from app import __version__
from app.cli_common import (
    EXIT_BROKEN_PIPE,
    EXIT_CODES_HELP,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    HelpFormatter,
    add_command,
)
from app.cli_policy import add_policy_commands
from app.cli_revoke import add_revoke_command
from app.injector.cli import add_injector_command


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from app.preflight import PreflightError, probe_ports, propagator_names, serve_listeners

    try:
        # Before anything imports OpenTelemetry, which raises on OTEL_PROPAGATORS it cannot load.
        propagator_names(os.environ)
    except PreflightError as exc:
        return _startup_error(str(exc))

    from app.settings import ConfigError, load_settings

    try:
        settings = load_settings(Path(args.config))
    except ConfigError as exc:
        print(f"ztauthz: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        probe_ports(serve_listeners(settings))  # before any listener starts
    except PreflightError as exc:
        return _startup_error(str(exc))

    from app.main import event_loop_factory, serve
    from app.policy.problem import PolicyLoadError
    from app.telemetry.logging import configure_logging

    configure_logging(settings.log_level)  # JSON lines on stderr; decisions go to stdout
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(serve(settings))
    except ConfigError as exc:  # found while building telemetry (OTEL_*, subject hash key)
        print(f"ztauthz: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except PolicyLoadError as exc:
        problems = "\n".join(str(p) for p in exc.problems)
        print(f"ztauthz: invalid policies:\n{problems}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a port taken between the probe and the bind
        return _startup_error(f"cannot listen: {exc}")
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _startup_error(message: str) -> int:
    print(f"ztauthz: {message}", file=sys.stderr)
    return EXIT_USAGE


def build_parser(with_dev: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ztauthz",
        description="Zero-trust authorization sidecar for Envoy ext_authz: verifies OIDC "
        "tokens, gathers device and location evidence and decides each request by "
        "least-privilege policies, explaining every decision.",
        epilog=EXIT_CODES_HELP,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ztauthz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = add_command(
        sub,
        "serve",
        "run the ext_authz check service",
        "Run the ext_authz check service (HTTP and/or gRPC) and its admin listener until "
        "SIGTERM or SIGINT. Every port is checked before any listener starts; a start-up "
        "error exits 2 with one line on stderr.",
    )
    serve.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    serve.set_defaults(func=_cmd_serve)

    policy = add_command(sub, "policy", "validate and test policy directories")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    add_policy_commands(policy_sub, sub)  # policy check | policy test, and explain
    add_injector_command(sub)  # the Kubernetes sidecar injection webhook
    add_revoke_command(sub)  # the kill switch, through a running ztauthz's admin API

    if with_dev:
        # Imported only for `ztauthz dev ...`: the dev issuer is never reachable from `serve`.
        from app.dev.cli import add_dev_commands

        add_dev_commands(sub)
    else:
        add_command(sub, "dev", "local development tools (dev issuer, tokens, demo stack)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code (app/cli_common.py) is returned, never raised."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_dev=bool(args_list) and args_list[0] == "dev")
    args = parser.parse_args(args_list)  # usage errors exit 2 (argparse)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
    except BrokenPipeError:
        if _stdout_is_broken():  # its reader is gone (| head); any other pipe is a bug
            return _stdout_closed()
        return _internal_error()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        return _internal_error()
    return code


def _internal_error() -> int:
    import traceback

    traceback.print_exc()
    print("ztauthz: internal error (a bug: please report it with the above)", file=sys.stderr)
    return EXIT_INTERNAL


def _stdout_is_broken() -> bool:
    """True when nobody reads stdout any more (poll reports an error on the pipe)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError, AttributeError):  # closed, or not a file
        return True
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in events)


def _stdout_closed() -> int:
    """The reader of stdout went away (``| head``): drop the rest of the output quietly."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
