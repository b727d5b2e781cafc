"""``ztauthz dev signal``: the dev transmitter of the local stack (app/dev/transmitter.py) from
the command line: signs a CAEP/RISC security event with the dev keys and pushes it (RFC 8935)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli_common import EXIT_OK
from app.dev import state
from app.dev.cli import DEFAULT_ISSUER_PORT, fail


def add_signal_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "signal",
        help="act as an SSF transmitter: sign a CAEP event with the dev keys and push it",
        description="Sign a CAEP Security Event Token with the dev keys (the dev issuer is also "
        "the dev SSF transmitter) and push it to a ztauthz receiver (RFC 8935). Prints the "
        "receiver's answer; exits 0 on 202.",
    )
    parser.add_argument(
        "event", choices=("session-revoked", "device-compliance-change"), help="the CAEP event"
    )
    parser.add_argument(
        "--receiver", required=True, help="push URL, e.g. http://127.0.0.1:9200/ssf/dev"
    )
    parser.add_argument("--token-file", type=Path, required=True, help="the stream's push token")
    parser.add_argument(
        "--keys", type=Path, default=state.keys_dir(), help="keys directory (the dev issuer's)"
    )
    parser.add_argument(
        "--issuer", default=f"http://127.0.0.1:{DEFAULT_ISSUER_PORT}", help="iss (the transmitter)"
    )
    parser.add_argument("--aud", required=True, help="aud: the receiver's audience")
    parser.add_argument("--sub", help="the user (sub of the tokens to revoke)")
    parser.add_argument("--sid", help="the session (sid claim of the tokens to revoke)")
    parser.add_argument("--device", help="the device (device-compliance-change)")
    parser.add_argument(
        "--status",
        choices=("compliant", "not-compliant"),
        default="not-compliant",
        help="device-compliance-change: the new status",
    )
    parser.set_defaults(func=_cmd_signal)


def _cmd_signal(args: argparse.Namespace) -> int:
    from app.dev.keys import DevKeyError, DevKeys
    from app.dev.transmitter import device_compliance_change, push, session_revoked, subject

    try:
        keys = DevKeys.load_or_create(args.keys)
        token = args.token_file.read_text(encoding="utf-8").strip()
        if args.event == "session-revoked":
            set_token = session_revoked(
                keys,
                issuer=args.issuer,
                audience=args.aud,
                sub_id=subject(args.issuer, sub=args.sub, session=args.sid),
            )
        else:
            if args.device is None:
                raise ValueError("device-compliance-change needs --device")
            set_token = device_compliance_change(
                keys,
                issuer=args.issuer,
                audience=args.aud,
                device=args.device,
                compliant=args.status == "compliant",
            )
        answer = push(args.receiver, token, set_token)
    except (DevKeyError, ValueError, OSError) as exc:
        return fail("signal", exc)
    except Exception as exc:  # httpx: the receiver is not there
        return fail("signal", RuntimeError(f"push failed: {type(exc).__name__}"))
    print(f"{answer.status} {answer.body}".rstrip())
    return EXIT_OK if answer.status == 202 else 1
