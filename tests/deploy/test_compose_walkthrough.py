"""The docker-compose walkthrough without Docker: the same OIDC provider program, the same
token script, ztauthz with the compose config and policies, asked exactly as Envoy asks. Only
the ports differ (ephemeral, loopback), so docs/containers.md's allowed and denied requests are proven
here; the containers themselves cannot run on this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import jwt
import pytest

from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess
from tests.deploy.deploy_support import COMPOSE, REPO

INTEROP = REPO / "tests" / "interop"
COMPOSE_ISSUER = "http://127.0.0.1:9400"
SECRET = "walkthrough-secret-not-for-production"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("Node.js is not installed: the compose OIDC provider cannot run here")
    if not (INTEROP / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(
            "oidc-provider is not installed: run `make test` or `cd tests/interop && npm ci`"
        )
    return found


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """tests/interop/provider.mjs, as the compose "oidc" service runs it (another port)."""
    process = ManagedProcess(
        "oidc-provider",
        [node(), str(INTEROP / "provider.mjs"), "0"],
        log_path=tmp_path_factory.mktemp("oidc") / "provider.log",
        env={**os.environ, "INTEROP_CLIENT_SECRET": SECRET},
        cwd=INTEROP,
    )
    process.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = [x for x in process.log_tail().splitlines() if x.startswith("READY ")]
            if ready:
                yield ready[0].removeprefix("READY ").strip()
                return
            assert process.running, process.log_tail()
            time.sleep(0.05)
        pytest.fail(f"the provider did not start:\n{process.log_tail()}")
    finally:
        process.stop()


def token(issuer: str, *scopes: str) -> str:
    """deploy/compose/oidc/token.mjs, as `docker compose exec oidc node /demo/token.mjs`."""
    result = subprocess.run(
        [node(), str(COMPOSE / "oidc" / "token.mjs"), *scopes],
        env={**os.environ, "OIDC_ISSUER": issuer, "INTEROP_CLIENT_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1  # the token alone, so $(...) captures it
    return lines[0]


def test_token_script_prints_a_jwt_access_token(issuer: str) -> None:
    claims = jwt.decode(token(issuer, "invoices:read"), options={"verify_signature": False})
    assert claims["iss"] == issuer
    assert claims["aud"] == "https://invoices-rs256.interop.test/"
    assert claims["scope"] == "invoices:read"
    assert claims["sub"] == "interop-client-a"


def test_token_script_reports_a_wrong_secret(issuer: str) -> None:
    result = subprocess.run(
        [node(), str(COMPOSE / "oidc" / "token.mjs")],
        env={**os.environ, "OIDC_ISSUER": issuer, "INTEROP_CLIENT_SECRET": "wrong"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "token.mjs: the token endpoint answered 401" in result.stderr


@dataclass(frozen=True, slots=True)
class Ztauthz:
    check: str


@pytest.fixture(scope="module")
def ztauthz(issuer: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ztauthz]:
    """ztauthz with deploy/compose/ztauthz.yaml and policies; only the issuer's port differs."""
    directory = tmp_path_factory.mktemp("ztauthz")
    text = (COMPOSE / "ztauthz.yaml").read_text()
    assert text.count(COMPOSE_ISSUER) == 1
    config = directory / "config.yaml"
    config.write_text(text.replace(COMPOSE_ISSUER, issuer))
    check, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZTAUTHZ_")}
    env |= {
        "ZTAUTHZ_SERVER__CHECK__PORT": str(check),
        "ZTAUTHZ_SERVER__ADMIN__PORT": str(admin),
        "ZTAUTHZ_POLICIES": str(COMPOSE / "policies"),
    }
    process = ManagedProcess(
        "ztauthz",
        [sys.executable, "-m", "app.cli", "serve", "--config", str(config)],
        log_path=directory / "ztauthz.log",
        env=env,
        cwd=REPO,
        ready=HttpReady(f"http://127.0.0.1:{admin}/readyz"),
        ready_timeout=30,
    )
    process.start()
    try:
        yield Ztauthz(f"http://127.0.0.1:{check}/check")
    finally:
        process.stop()


def ask(z: Ztauthz, method: str, path: str, bearer: str | None = None) -> httpx.Response:
    """The check request Envoy's HTTP ext_authz sends: method, prefix + path, Host, headers."""
    headers = {"host": "localhost:10000", "x-request-id": "walkthrough"}
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"
    return httpx.request(method, f"{z.check}{path}", headers=headers, timeout=10.0)


def test_walkthrough_no_token_is_401_with_a_bearer_challenge(ztauthz: Ztauthz) -> None:
    response = ask(ztauthz, "GET", "/invoices")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_walkthrough_reader_is_allowed_to_read(ztauthz: Ztauthz, issuer: str) -> None:
    response = ask(ztauthz, "GET", "/invoices", token(issuer, "invoices:read"))
    assert response.status_code == 200
    assert response.headers["x-auth-subject"] == "interop-client-a"


def test_walkthrough_reader_is_denied_writing(ztauthz: Ztauthz, issuer: str) -> None:
    response = ask(ztauthz, "POST", "/invoices", token(issuer, "invoices:read"))
    assert response.status_code == 403
    body = response.json()
    assert body["decision"] == "deny"
    assert body["reason"] == "no_matching_rule"  # default deny: no rule grants POST to readers
    assert body["decision_id"] == response.headers["x-auth-decision-id"]


def test_walkthrough_writer_may_create_but_never_reach_admin(ztauthz: Ztauthz, issuer: str) -> None:
    writer = token(issuer, "invoices:read", "invoices:write")
    assert ask(ztauthz, "POST", "/invoices", writer).status_code == 200
    denied = ask(ztauthz, "GET", "/admin/users", writer)
    assert denied.status_code == 403
    assert denied.json()["reason"] == "denied_by_rule"


def test_es256_resource_tokens_are_accepted_too(ztauthz: Ztauthz, issuer: str) -> None:
    result = subprocess.run(
        [node(), str(COMPOSE / "oidc" / "token.mjs"), "invoices:read"],
        env={
            **os.environ,
            "OIDC_ISSUER": issuer,
            "INTEROP_CLIENT_SECRET": SECRET,
            "OIDC_RESOURCE": "https://invoices-es256.interop.test/",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert jwt.get_unverified_header(result.stdout.strip())["alg"] == "ES256"
    assert ask(ztauthz, "GET", "/invoices/42", result.stdout.strip()).status_code == 200
