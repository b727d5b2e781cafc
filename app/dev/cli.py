"""``ztauthz dev ...``: dev issuer, dev tokens (DPoP keys and proofs: cli_dpop.py), demo
upstream and the local demo stack.

Only argparse is imported here; each command imports what it runs, so building the parser
never loads keys, uvicorn or the stack supervisor.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from app.cli_common import EXIT_OK, EXIT_USAGE, HelpFormatter, add_command
from app.dev import state

DEFAULT_ISSUER_PORT = 9400
DEFAULT_UPSTREAM_PORT = 8081
DEFAULT_DEVICE_ISSUER_PORT = 9401
DEV_DIR_HELP = (
    f"The dev state directory is ${state.ENV} if set, else .dev in the source checkout, else "
    "~/.local/state/ztauthz/dev (docs/cli.md)."
)
POSTURE = frozenset(
    {
        "managed",
        "compliant",
        "disk_encrypted",
        "screen_lock",
        "risk_score",
        "os_name",
        "os_version",
        "country",
    }
)
STACK_MODULE = "app.dev.demo"


def add_dev_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dev`` with its subcommands; each sets ``func(args) -> exit code``."""
    dev = add_command(
        subparsers,
        "dev",
        "local development tools (dev issuer, tokens, demo upstream, demo stack)",
        "DEVELOPMENT ONLY: tools for the local demo and tests.",
    )
    commands = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    _add_issuer(commands)
    _add_token(commands)
    _add_device_token(commands)
    _add_upstream(commands)
    from app.dev.cli_signal import add_signal_command  # argparse only, like this module

    add_signal_command(commands)
    _add_stack(commands)
    from app.dev.cli_dpop import add_dpop_commands  # argparse only, like this module

    add_dpop_commands(commands)


def _add_issuer(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        commands,
        "issuer",
        "serve OIDC discovery and the JWKS of the dev keys",
        "Serve /.well-known/openid-configuration and /jwks.json for the dev keys. "
        f"Prints the issuer URL on stdout once listening. {DEV_DIR_HELP}",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_ISSUER_PORT, help="port to listen on (0: any free)"
    )
    parser.add_argument(
        "--keys", type=Path, default=state.keys_dir(), help="keys directory (created if missing)"
    )
    parser.add_argument(
        "--issuer-url", help="issuer identifier (default: http://HOST:PORT as bound)"
    )
    parser.set_defaults(func=_cmd_issuer)


def _add_token(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        commands,
        "token",
        "print a signed dev access token",
        "Mint an access token signed with the dev keys: the token alone on stdout, and on "
        "stderr which issuer and keys it is for and whether a dev stack runs with them. "
        f"{DEV_DIR_HELP}",
    )
    parser.add_argument(
        "--keys", type=Path, default=state.keys_dir(), help="keys directory (created if missing)"
    )
    parser.add_argument(
        "--issuer",
        help="iss claim (default: the running dev stack's issuer, else "
        f"http://127.0.0.1:{DEFAULT_ISSUER_PORT})",
    )
    parser.add_argument("--aud", action="append", required=True, help="aud (repeatable)")
    parser.add_argument("--sub", default="alice", help="sub claim")
    parser.add_argument("--group", action="append", default=[], help="group (repeatable)")
    parser.add_argument("--scope", action="append", default=[], help="scope (repeatable)")
    parser.add_argument(
        "--alg", choices=("RS256", "ES256"), default="RS256", help="signing algorithm"
    )
    parser.add_argument("--ttl", type=_duration, default="5m", help="lifetime, e.g. 5m or 1h")
    parser.add_argument(
        "--claim",
        action="append",
        type=_claim,
        default=[],
        metavar="NAME=VALUE",
        help="extra or overriding claim (repeatable); VALUE is JSON if it parses, else a string",
    )
    parser.add_argument(
        "--drop-claim", action="append", default=[], metavar="NAME", help="remove a claim"
    )
    parser.add_argument("--device-id", help="device_id claim (what binds a device token)")
    parser.add_argument(
        "--dpop-key",
        type=Path,
        help="bind the token to this DPoP key (cnf.jkt; the key from dev dpop-key)",
    )
    parser.add_argument(
        "--bind-cert",
        type=Path,
        help="bind the token to this client certificate (PEM; cnf x5t#S256, RFC 8705)",
    )
    parser.add_argument("--country", help="country claim: a signed location (e.g. DE)")
    parser.set_defaults(func=_cmd_token)


def _add_device_token(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        commands,
        "device-token",
        "print a signed dev device attestation token (as an MDM would issue)",
        "Mint a device attestation token (sub = the device id) signed with the dev "
        "device provider's keys; send it in x-device-token beside an identity token whose "
        "device_id claim names the same device. Prints only the token.",
    )
    parser.add_argument(
        "--keys",
        type=Path,
        default=state.device_keys_dir(),
        help="keys directory (created if missing)",
    )
    parser.add_argument(
        "--issuer",
        help="iss claim (default: the running dev stack's device issuer, else "
        f"http://127.0.0.1:{DEFAULT_DEVICE_ISSUER_PORT})",
    )
    parser.add_argument("--aud", action="append", required=True, help="aud (repeatable)")
    parser.add_argument("--device-id", required=True, help="sub claim: the device id")
    parser.add_argument(
        "--posture",
        action="append",
        type=_claim,
        default=[],
        metavar="NAME=VALUE",
        help="posture claim (repeatable): managed, compliant, disk_encrypted, screen_lock "
        "(true/false), risk_score, os_name, os_version, country; VALUE is JSON if it parses",
    )
    parser.add_argument(
        "--alg", choices=("RS256", "ES256"), default="ES256", help="signing algorithm"
    )
    parser.add_argument("--ttl", type=_duration, default="5m", help="lifetime, e.g. 5m or 1h")
    parser.set_defaults(func=_cmd_device_token)


def _add_upstream(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_command(
        commands,
        "upstream",
        "serve the demo upstream (echoes each request as JSON)",
        "Answer every request with 200 and a JSON echo of method, path and headers. "
        "Prints its base URL on stdout once listening.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_UPSTREAM_PORT, help="port to listen on (0: any free)"
    )
    parser.set_defaults(func=_cmd_upstream)


def _add_stack(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # The stack's own options are parsed by the stack's parser when the command runs, so that
    # building this parser does not import the stack (and through it processes and Envoy).
    # No option prefix here: every argument, --help included, reaches the stack's parser.
    parser = add_command(
        commands,
        "stack",
        "run the local demo stack (see `ztauthz dev stack --help`)",
        add_help=False,
        prefix_chars="\0",
    )
    parser.add_argument("stack_args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=_cmd_stack)


def _duration(text: str) -> float:
    from app.durations import parse_duration

    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _claim(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name, value


def fail(command: str, exc: Exception) -> int:
    print(f"ztauthz dev {command}: {exc}", file=sys.stderr)
    return EXIT_USAGE


def _cmd_issuer(args: argparse.Namespace) -> int:
    from app.dev.issuer import serve_issuer
    from app.dev.keys import DevKeyError

    try:
        serve_issuer(args.host, args.port, args.keys, args.issuer_url)
    except (DevKeyError, ValueError, OSError) as exc:
        return fail("issuer", exc)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _cmd_token(args: argparse.Namespace) -> int:
    from app.dev.keys import DevKeyError, DevKeys
    from app.dev.tokens import DROP, identity_device_claims, mint

    extra: dict[str, Any] = identity_device_claims(args.device_id, country=args.country)
    try:
        extra.update(_binding(args.dpop_key, args.bind_cert))
    except (OSError, ValueError) as exc:
        return fail("token", exc)
    extra.update(dict(args.claim))
    extra.update(dict.fromkeys(args.drop_claim, DROP))
    stack = state.running_stack(args.keys.parent)
    issuer = args.issuer or (stack or {}).get("issuer") or f"http://127.0.0.1:{DEFAULT_ISSUER_PORT}"
    try:
        new = not args.keys.is_dir()
        keys = DevKeys.load_or_create(args.keys)
        token = mint(
            keys,
            issuer=issuer,
            audience=args.aud[0] if len(args.aud) == 1 else list(args.aud),
            subject=args.sub,
            groups=args.group,
            scopes=args.scope,
            alg=args.alg,
            ttl=args.ttl,
            extra_claims=extra,
        )
    except (DevKeyError, ValueError, TypeError) as exc:
        return fail("token", exc)
    print(token)
    _say_for_whom("token", issuer, args.keys, new, stack, "issuer")
    return EXIT_OK


def _binding(dpop_key: Path | None, certificate: Path | None) -> dict[str, Any]:
    """The ``cnf`` claim binding a token to a DPoP key and/or a client certificate."""
    cnf: dict[str, str] = {}
    if dpop_key is not None:
        from app.dev.dpop import DpopKey

        cnf["jkt"] = DpopKey.load(dpop_key).jkt
    if certificate is not None:
        from app.dev.tokens import certificate_thumbprint

        cnf["x5t#S256"] = certificate_thumbprint(certificate.read_bytes())
    return {"cnf": cnf} if cnf else {}


def _say_for_whom(
    command: str, issuer: str, keys: Path, new: bool, stack: dict[str, Any] | None, role: str
) -> None:
    """On stderr: which issuer and keys the token is for, and whether a stack trusts them."""
    print(f"ztauthz dev {command}: iss {issuer}, signed with the keys in {keys}", file=sys.stderr)
    if new:
        print(
            f"ztauthz dev {command}: created new keys in {keys}: only an issuer started "
            "after this trusts them (a running stack with other keys answers 401)",
            file=sys.stderr,
        )
    if stack is None:
        print(f"ztauthz dev {command}: no dev stack is running on {keys.parent}", file=sys.stderr)
    elif stack.get(role) != issuer:
        print(
            f"ztauthz dev {command}: the dev stack running on {keys.parent} has {role} "
            f"{stack.get(role)}, not {issuer}: it will not accept this token",
            file=sys.stderr,
        )
    else:
        print(
            f"ztauthz dev {command}: for the dev stack running on {keys.parent} "
            f"(pid {stack.get('pid')})",
            file=sys.stderr,
        )


def _cmd_device_token(args: argparse.Namespace) -> int:
    from app.dev.keys import DevKeyError, DevKeys
    from app.dev.tokens import mint_device_token

    posture: dict[str, Any] = dict(args.posture)
    unknown = sorted(set(posture) - POSTURE)
    if unknown:
        return fail("device-token", ValueError(f"unknown posture claim(s) {unknown}"))
    stack = state.running_stack(args.keys.parent)
    issuer = (
        args.issuer
        or (stack or {}).get("device_issuer")
        or f"http://127.0.0.1:{DEFAULT_DEVICE_ISSUER_PORT}"
    )
    try:
        new = not args.keys.is_dir()
        keys = DevKeys.load_or_create(args.keys)
        token = mint_device_token(
            keys,
            alg=args.alg,
            issuer=issuer,
            audience=args.aud[0] if len(args.aud) == 1 else list(args.aud),
            device_id=args.device_id,
            ttl=args.ttl,
            **posture,
        )
    except (DevKeyError, ValueError, TypeError) as exc:
        return fail("device-token", exc)
    print(token)
    _say_for_whom("device-token", issuer, args.keys, new, stack, "device_issuer")
    return EXIT_OK


def _cmd_upstream(args: argparse.Namespace) -> int:
    from app.dev.upstream import serve_upstream

    try:
        serve_upstream(args.host, args.port)
    except OSError as exc:
        return fail("upstream", exc)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _cmd_stack(args: argparse.Namespace) -> int:
    try:
        stack = importlib.import_module(STACK_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != STACK_MODULE:
            raise
        print(
            f"ztauthz dev stack: the demo stack is not available ({STACK_MODULE} is missing)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    parser = argparse.ArgumentParser(
        prog="ztauthz dev stack",
        description="DEVELOPMENT ONLY: run the local demo stack (issuers, upstream, Envoy plain "
        "and mTLS, ztauthz) on 127.0.0.1 until Ctrl-C, and print how to try it.",
        formatter_class=HelpFormatter,
    )
    stack.add_arguments(parser)
    return int(stack.run(parser.parse_args(args.stack_args)))
