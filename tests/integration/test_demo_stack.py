"""`ztauthz dev stack --check`: the README's first command really works, then cleans up."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from app.dev.stack import ztauthz_command
from app.dev.stack_config import Ports

pytestmark = pytest.mark.integration


def _port_args(ports: Ports) -> list[str]:
    argv: list[str] = []
    for name, port in (
        ("envoy", ports.envoy),
        ("envoy-admin", ports.envoy_admin),
        ("check", ports.check),
        ("admin", ports.admin),
        ("issuer", ports.issuer),
        ("upstream", ports.upstream),
        ("envoy-mtls", ports.envoy_mtls),
        ("envoy-mtls-admin", ports.envoy_mtls_admin),
        ("device-issuer", ports.device_issuer),
        ("receiver", ports.receiver),
    ):
        argv += [f"--{name}-port", str(port)]
    return argv


def test_dev_stack_check_passes_and_stops_everything(
    tmp_path: Path, child_env: dict[str, str]
) -> None:
    ports = Ports.ephemeral()
    argv = [*ztauthz_command(), "dev", "stack", "--check", "--dir", str(tmp_path / "dev")]
    argv += _port_args(ports)
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=child_env, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo check: 7 of 7 scenarios as expected" in result.stdout
    # Continuous access evaluation: allowed, a session-revoked SET pushed, the same token refused.
    assert "[ok] a session-revoked security event ends the session at once" in result.stdout
    assert "(CAEP session-revoked) -> 202" in result.stdout
    assert "with the same token -> 401 session_revoked" in result.stdout
    assert '"x-auth-subject": "alice"' in result.stdout
    assert '"reason":"token_missing"' in result.stdout
    assert '"reason":"denied_by_rule"' in result.stdout
    # The workload call over the mTLS listener: no token, the certificate's SPIFFE ID.
    assert '"x-auth-workload": "spiffe://example.org/ns/billing/sa/invoice-worker"' in result.stdout
    # A DPoP-bound token: allowed with its key's proof, refused with another key's.
    assert "[ok] allowed: alice's DPoP-bound token (cnf.jkt) with a proof from her key" in (
        result.stdout
    )
    assert '"reason":"dpop_key_mismatch"' in result.stdout
    assert 'WWW-Authenticate: DPoP realm="ztauthz", error="invalid_token"' in result.stdout
    logs = tmp_path / "dev" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        "device-issuer.log",
        "envoy-mtls.log",
        "envoy.log",
        "issuer.log",
        "upstream.log",
        "ztauthz.log",
    ]
    # Every process was stopped: nothing listens on the stack's ports any more.
    for port in (
        ports.envoy,
        ports.check,
        ports.issuer,
        ports.upstream,
        ports.envoy_mtls,
        ports.device_issuer,
        ports.receiver,
    ):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_dev_stack_refuses_a_busy_port(tmp_path: Path, child_env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [*ztauthz_command(), "dev", "stack", "--check", "--dir", str(tmp_path)]
        argv += ["--envoy-port", str(port)]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=30,
            env=child_env,
            check=False,
        )
    assert result.returncode == 2  # a start-up error (app/cli_common.py)
    assert f"port {port} (envoy) is in use" in result.stderr


def test_the_printed_hints_work_in_a_fresh_shell_anywhere(
    tmp_path: Path, child_env: dict[str, str]
) -> None:
    """What `ztauthz dev stack` prints runs as printed: from another directory, in a shell
    without the venv on PATH; the token names the stack it is for, and `--country DE` becomes
    the request's country (the demo trusts signed location claims, as the docs say)."""
    ports = Ports.ephemeral()
    env = {**child_env, "ZTAUTHZ_DEV_DIR": str(tmp_path / "state")}
    stack = subprocess.Popen(
        [*ztauthz_command(), "dev", "stack", *_port_args(ports)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert stack.stdout is not None
        printed: list[str] = []
        deadline = time.monotonic() + 60
        while not printed or not printed[-1].startswith("Press Ctrl-C"):
            assert time.monotonic() < deadline and stack.poll() is None, printed
            printed.append(stack.stdout.readline().rstrip("\n"))
        more = next(line for line in printed if line.startswith("More tokens: "))
        command = more.removeprefix("More tokens: ") + " --device-id laptop-1 --country DE"
        assert str(tmp_path / "state" / "keys") in command
        fresh = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no venv, no ZTAUTHZ_*
        minted = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd="/",
            env=fresh,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert minted.returncode == 0, minted.stderr
        assert "for the dev stack running on" in minted.stderr, minted.stderr
        token = minted.stdout.strip()
        connection = http.client.HTTPConnection("127.0.0.1", ports.envoy, timeout=10)
        connection.request("GET", "/invoices", headers={"Authorization": f"Bearer {token}"})
        reply = connection.getresponse()
        body = reply.read().decode()
        connection.close()
        assert reply.status == 200, body
        assert json.loads(body)["headers"]["x-auth-country"] == "DE"
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(timeout=30)
        if stack.stdout is not None:
            stack.stdout.close()
    assert not (tmp_path / "state" / "stack.json").exists()  # no stale record of a stopped stack
