"""`ztauthz dev stack --check`: the README's first command really works, then cleans up."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from app.dev.stack import Ports, ztauthz_command

pytestmark = pytest.mark.integration


def test_dev_stack_check_passes_and_stops_everything(
    tmp_path: Path, child_env: dict[str, str]
) -> None:
    ports = Ports.ephemeral()
    argv = [*ztauthz_command(), "dev", "stack", "--check", "--dir", str(tmp_path / "dev")]
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
    assert result.returncode == 1
    assert f"port {port} (envoy) is in use" in result.stderr
