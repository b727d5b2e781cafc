"""Running the certified OpenID provider (npm ``oidc-provider``) for the interop tests.

``node provider.mjs`` serves it on loopback with the client_credentials grant and RFC 8707
resource indicators; each resource gets RFC 9068 JWT access tokens signed with its own
algorithm. conftest.py starts one per session; the test modules import ``OidcProvider`` from
here (not from conftest, whose module name pytest and mypy share between directories).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import httpx

from app.dev.procs import ManagedProcess, ProcessError

HERE = Path(__file__).resolve().parent
PACKAGE = "oidc-provider"
READY_PREFIX = "READY "
START_TIMEOUT = 30.0

# What provider.mjs serves (keep the two in step): the resource indicators by signing
# algorithm, and the client ids. Every resource offers the scopes invoices:read invoices:write.
RESOURCES = {
    "RS256": "https://invoices-rs256.interop.test/",
    "ES256": "https://invoices-es256.interop.test/",
}
UNRELATED_RESOURCE = "https://unrelated.interop.test/"  # RS256, same scopes, another audience
OPAQUE_RESOURCE = "https://invoices-opaque.interop.test/"  # opaque tokens, same scopes
CLIENT_IDS = ("interop-client-a", "interop-client-b")
# ztauthz's own clients at the provider, allowed to introspect every token (RFC 7662).
INTROSPECTOR_BASIC = "ztauthz-introspector-basic"  # client_secret_basic
INTROSPECTOR_JWT = "ztauthz-introspector-jwt"  # private_key_jwt
TOKEN_TTL = 300


class NotInstalled(Exception):
    """node_modules lacks oidc-provider, or holds another version than the lock file."""


@dataclass(frozen=True, slots=True)
class OidcProvider:
    """A running oidc-provider: its issuer and a way to obtain access tokens from it."""

    issuer: str
    token_endpoint: str
    version: str
    client_secret: str = field(repr=False)
    introspection_endpoint: str | None = None
    revocation_endpoint: str | None = None

    resources: ClassVar[Mapping[str, str]] = MappingProxyType(RESOURCES)
    unrelated_resource: ClassVar[str] = UNRELATED_RESOURCE
    opaque_resource: ClassVar[str] = OPAQUE_RESOURCE
    client_ids: ClassVar[tuple[str, ...]] = CLIENT_IDS
    token_ttl: ClassVar[int] = TOKEN_TTL

    def token_response(
        self, resource: str, scope: str, client_id: str = CLIENT_IDS[0]
    ) -> httpx.Response:
        """client_credentials at the token endpoint (client_secret_basic, RFC 8707 resource)."""
        return httpx.post(
            self.token_endpoint,
            data={"grant_type": "client_credentials", "scope": scope, "resource": resource},
            auth=(client_id, self.client_secret),
            timeout=10.0,
        )

    def get_token(self, resource: str, scope: str, client_id: str = CLIENT_IDS[0]) -> str:
        response = self.token_response(resource, scope, client_id)
        if response.status_code != 200:
            raise AssertionError(f"token request refused: {response.status_code} {response.text}")
        body = response.json()
        token = body.get("access_token")
        if body.get("token_type") != "Bearer" or not isinstance(token, str):
            raise AssertionError(f"unexpected token response: {sorted(body)}")
        return token

    def revoke(self, token: str, client_id: str = CLIENT_IDS[0]) -> httpx.Response:
        """RFC 7009 §2.1: the client that holds ``token`` revokes it at the provider."""
        assert self.revocation_endpoint is not None, "revocation is not enabled"
        return httpx.post(
            self.revocation_endpoint,
            data={"token": token, "token_type_hint": "access_token"},
            auth=(client_id, self.client_secret),
            timeout=10.0,
        )


def installed_version() -> str:
    """The installed oidc-provider version; NotInstalled when missing or not the locked one."""
    installed = HERE / "node_modules" / PACKAGE / "package.json"
    if not installed.is_file():
        raise NotInstalled(
            f"{PACKAGE} is not installed in {HERE / 'node_modules'}: run `make test`, "
            "or `cd tests/interop && npm ci`"
        )
    version = str(json.loads(installed.read_text(encoding="utf-8"))["version"])
    lock = json.loads((HERE / "package-lock.json").read_text(encoding="utf-8"))
    locked = str(lock["packages"][f"node_modules/{PACKAGE}"]["version"])
    if version != locked:
        raise NotInstalled(
            f"{PACKAGE} {version} is installed but {locked} is locked: "
            "run `cd tests/interop && npm ci`"
        )
    return version


def _wait_ready(process: ManagedProcess) -> str:
    """The issuer from provider.mjs's READY line (it listens first, then names its port)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for line in process.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(READY_PREFIX):
                return line.removeprefix(READY_PREFIX).strip()
        if not process.running:
            break
        time.sleep(0.05)
    raise ProcessError(
        f"oidc-provider did not become ready (exit status {process.returncode}):\n"
        f"{process.log_tail()}"
    )


@contextmanager
def run_oidc_provider(node: str, log_path: Path) -> Iterator[OidcProvider]:
    """Start provider.mjs on an ephemeral loopback port; always stop it afterwards."""
    provider, process = start_oidc_provider(node, log_path)
    try:
        yield provider
    finally:
        process.stop()


def start_oidc_provider(
    node: str,
    log_path: Path,
    *,
    port: int = 0,
    secret: str | None = None,
    introspector_secret: str | None = None,
    introspector_jwks: str | None = None,
) -> tuple[OidcProvider, ManagedProcess]:
    """Start provider.mjs (on ``port``, 0 for an ephemeral one) and wait until it serves.

    ``introspector_secret`` and ``introspector_jwks`` (a public JWKS as JSON) register
    ztauthz's introspection clients. The caller stops the returned process (it may start
    another on the same port: the same issuer, fresh keys and no tokens).
    """
    version = installed_version()
    env = {**os.environ, "INTEROP_CLIENT_SECRET": secret or secrets.token_urlsafe(32)}
    if introspector_secret is not None:
        env["INTEROP_INTROSPECTOR_SECRET"] = introspector_secret
    if introspector_jwks is not None:
        env["INTEROP_INTROSPECTOR_JWKS"] = introspector_jwks
    process = ManagedProcess(
        "oidc-provider",
        [node, str(HERE / "provider.mjs"), str(port)],
        log_path=log_path,
        env=env,
        cwd=HERE,
    )
    process.start()
    try:
        issuer = _wait_ready(process)
        discovery = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=10.0)
        discovery.raise_for_status()
        metadata = discovery.json()
    except BaseException:
        process.stop()
        raise
    provider = OidcProvider(
        issuer=issuer,
        token_endpoint=str(metadata["token_endpoint"]),
        version=version,
        client_secret=env["INTEROP_CLIENT_SECRET"],
        introspection_endpoint=metadata.get("introspection_endpoint"),
        revocation_endpoint=metadata.get("revocation_endpoint"),
    )
    return provider, process
