"""``ztauthz dev stack``: the local stack (app/dev/stack.py) with the demo on top.

It starts the stack, then prints curl commands for an allowed, an unauthenticated (401), a
forbidden (403), a workload (mTLS, no token) and a sender-constrained (DPoP) request, and how to
send a security event. Ctrl-C (or SIGTERM) stops everything in reverse order. ``--check`` sends
the requests itself (and a CAEP session-revoked event) and exits 0 only if each got the
expected answer.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from types import FrameType

from app.cli_common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from app.dev import state
from app.dev.demo_requests import (
    DemoRequest,
    curl_command,
    demo_requests,
    demo_token,
    problems,
    send,
    summary,
)
from app.dev.envoy import (
    EnvoyConfigError,
    EnvoyNotFound,
)
from app.dev.keys import DevKeyError
from app.dev.procs import ProcessError, ProcessGroup
from app.dev.stack import Stack, start_stack, ztauthz_command
from app.dev.stack_config import (
    DEMO_TOKEN_TTL,
    LOOPBACK,
    PUSH_TOKEN_FILE,
    RECEIVER_AUDIENCE,
    SHIPPED_POLICIES,
    Ports,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Ports()
    parser.add_argument(
        "--dir",
        type=Path,
        default=state.dev_dir(),
        help=f"work directory: keys, PKI, configurations, logs (${state.ENV} sets the default)",
    )
    parser.add_argument("--policies", type=Path, default=SHIPPED_POLICIES, help="policy directory")
    parser.add_argument(
        "--check",
        action="store_true",
        help="send the demo requests, print the results, stop; exit 0 only if all are as expected",
    )
    for f in fields(defaults):
        parser.add_argument(
            "--" + f.name.replace("_", "-") + "-port",
            dest=f"{f.name}_port",
            type=int,
            default=getattr(defaults, f.name),
            help=f"{f.name.replace('_', ' ')} port (0: any free)",
        )


class _Stop(Exception):
    pass


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into an exception, so the supervisor always cleans up."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(args: argparse.Namespace) -> int:
    try:
        ports = Ports(**{f.name: getattr(args, f"{f.name}_port") for f in fields(Ports)})
        ports = ports.resolved()
    except ValueError as exc:
        print(f"ztauthz dev stack: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    try:
        with _stop_on_signals(), ProcessGroup() as group:
            print(
                "starting issuers, upstream, Envoy (plain and mTLS) and ztauthz on 127.0.0.1 ...",
                file=out,
            )
            stack = start_stack(
                group,
                workdir=args.dir.resolve(),  # the hints print it: valid from any directory
                ports=ports,
                policies=args.policies,
                mtls=True,
                device_issuer=True,
            )
            requests = demo_requests(stack, now=time.time())
            if args.check:
                return _check(stack, requests)
            state.write_stack_record(
                stack.workdir,
                {
                    "pid": os.getpid(),
                    "issuer": stack.issuer_url,
                    "device_issuer": stack.device_issuer_url,
                    "audience": stack.audience,
                    "envoy": stack.envoy_url,
                },
            )
            try:
                _explain(stack, requests)
                while True:
                    group.check_alive()
                    time.sleep(0.5)
            finally:
                state.clear_stack_record(stack.workdir)
    except _Stop:
        print("\nstopped.", file=out)
        return EXIT_INTERRUPTED if args.check else EXIT_OK
    except (ProcessError, DevKeyError, EnvoyConfigError, EnvoyNotFound) as exc:
        print(f"ztauthz dev stack: {exc}", file=sys.stderr)
        return EXIT_USAGE  # a start-up error (app/cli_common.py)


def signal_demo(stack: Stack) -> list[str]:
    """Continuous access evaluation, end to end: a token allowed, a CAEP session-revoked SET
    signed by the dev transmitter and pushed to the receiver, the same token refused.
    Returns what went wrong (empty: as expected); prints each step."""
    from app.dev.transmitter import push, session_revoked, subject

    sid = "demo-" + secrets.token_hex(4)
    token = demo_token(stack, "dave", ["finance"], ["invoices:read"], extra_claims={"sid": sid})
    request = DemoRequest("", "signals", "GET", "/invoices", token, 200)
    found: list[str] = []
    before = send(stack, request)
    print(f"      GET /invoices as dave (session {sid}) -> {before.status}")
    if before.status != 200:
        found.append(f"before the event: status {before.status}, expected 200")
    set_token = session_revoked(
        stack.keys,
        issuer=stack.issuer_url,
        audience=RECEIVER_AUDIENCE,
        sub_id=subject(stack.issuer_url, sub="dave", session=sid),
    )
    push_token = (stack.workdir / PUSH_TOKEN_FILE).read_text(encoding="utf-8").strip()
    answer = push(stack.receiver_url, push_token, set_token)
    print(f"      POST {stack.receiver_url} (CAEP session-revoked) -> {answer.status}")
    if answer.status != 202:
        found.append(f"the receiver answered {answer.status}: {answer.body}")
    after = send(stack, request)
    reason = after.json().get("reason") if isinstance(after.json(), dict) else None
    print(f"      GET /invoices with the same token -> {after.status} {reason}")
    if (after.status, reason) != (401, "session_revoked"):
        found.append(f"after the event: {after.status} {reason}, expected 401 session_revoked")
    return found


def _check(stack: Stack, requests: list[DemoRequest]) -> int:
    failed = 0
    for request in requests:
        reply = send(stack, request)
        wrong = problems(request, reply)
        failed += bool(wrong)
        print(f"[{'ok' if not wrong else 'FAIL'}] {request.title}")
        print(f"      {request.method} {request.path} -> {summary(request, reply)}")
        for problem in wrong:
            print(f"      problem: {problem}")
    wrong = signal_demo(stack)
    print(
        f"[{'ok' if not wrong else 'FAIL'}] a session-revoked security event ends the session at once"
    )
    for problem in wrong:
        print(f"      problem: {problem}")
    total = len(requests) + 1
    failed += bool(wrong)
    print(f"demo check: {total - failed} of {total} scenarios as expected")
    return EXIT_FAILED if failed else EXIT_OK


def _explain(stack: Stack, requests: list[DemoRequest]) -> None:
    p = stack.ports
    print(
        f"""
ztauthz demo stack is ready.
DEVELOPMENT ONLY: the dev issuer signs with key files in {stack.workdir}/keys.

  Envoy          {stack.envoy_url}   (admin http://{LOOPBACK}:{p.envoy_admin})
  Envoy (mTLS)   {stack.envoy_mtls_url}   (admin http://{LOOPBACK}:{p.envoy_mtls_admin})
  ztauthz        {stack.check_url}/check   (admin {stack.admin_url}/readyz)
  dev issuer     {stack.issuer_url}
  device issuer  {stack.device_issuer_url}   (dev device-trust provider: device tokens)
  dev PKI        {stack.workdir}/pki/   (CA, Envoy's certificate, the workload's certificate)
  SSF receiver   {stack.receiver_url}   (security events; docs/continuous-access-evaluation.md)
  echo upstream  {stack.upstream_url}
  policies       {stack.policies}
  logs           {stack.workdir}/logs/

Demo tokens (valid for {int(DEMO_TOKEN_TTL // 60)} minutes):
"""
    )
    exported = set()
    for request in requests:
        if request.token is not None and request.name not in exported:
            exported.add(request.name)
            print(f"export {request.name}={shlex.quote(request.token)}")
    print()
    for request in requests:
        print(f"# {request.title}")
        print(curl_command(stack, request))
        print()
    # As printed, these run in any shell, from any directory: the CLI by its full path, the
    # keys and issuers named (docs/cli.md, "The local stack").
    ztauthz = shlex.join(ztauthz_command())
    print(
        f"More tokens: {ztauthz} dev token --keys "
        f"{shlex.quote(str(stack.workdir / 'keys'))} --issuer {stack.issuer_url} "
        f"--aud {stack.audience} --sub bob --group finance --scope invoices:read\n"
        "Device and location evidence: add --device-id laptop-1 --country DE to that token, "
        f'and send -H "x-device-token: $({ztauthz} dev device-token --keys '
        f"{shlex.quote(str(stack.workdir / 'device-keys'))} --issuer {stack.device_issuer_url} "
        f'--aud {stack.audience} --device-id laptop-1 --posture compliant=true)"\n'
        "Security events: a CAEP session-revoked for alice, signed by the dev transmitter:\n"
        f"  {ztauthz} dev signal session-revoked --receiver {stack.receiver_url} "
        f"--token-file {shlex.quote(str(stack.workdir / PUSH_TOKEN_FILE))} "
        f"--keys {shlex.quote(str(stack.workdir / 'keys'))} --issuer {stack.issuer_url} "
        f"--aud {RECEIVER_AUDIENCE} --sub alice\n"
        f"Kill switch: {ztauthz} revoke --config "
        f"{shlex.quote(str(stack.config_path))} --subject alice\n"
        "Press Ctrl-C to stop everything.",
        flush=True,
    )
