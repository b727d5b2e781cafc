"""The demo's requests: what ``ztauthz dev stack`` prints and ``--check`` sends, each with the
answer it must get, and how to send one, show it as curl, and judge the reply."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.dev.pki import DEMO_WORKLOAD_ID
from app.dev.stack import Reply, Stack, http_request, https_request
from app.dev.stack_config import (
    DEMO_TOKEN_TTL,
)
from app.dev.tokens import mint


@dataclass(frozen=True, slots=True)
class DemoRequest:
    name: str
    title: str
    method: str
    path: str
    token: str | None
    expect_status: int
    expect_reason: str | None = None
    workload: bool = False  # sent over the mTLS listener with the demo workload's certificate
    # Sent as "Authorization: DPoP <token>" with a fresh proof signed by this key (RFC 9449).
    dpop_key: Path | None = None


def demo_dpop_keys(stack: Stack) -> tuple[Path, Path]:
    """Alice's DPoP key and another one (a thief's), kept in the work directory."""
    from app.dev.dpop import DpopKey

    keys = []
    for name in ("alice", "thief"):
        path = stack.workdir / "dpop" / f"{name}.pem"
        if not path.exists():
            DpopKey.generate("ES256").save(path)
        keys.append(path)
    return keys[0], keys[1]


def demo_token(
    stack: Stack, subject: str, groups: list[str], scopes: list[str], **more: Any
) -> str:
    """A token from the stack's dev issuer for its audience, valid for DEMO_TOKEN_TTL
    (``more``: the rest of ``mint``'s arguments)."""
    return mint(
        stack.keys,
        issuer=stack.issuer_url,
        audience=stack.audience,
        subject=subject,
        groups=groups,
        scopes=scopes,
        ttl=DEMO_TOKEN_TTL,
        **more,
    )


def demo_requests(stack: Stack, now: float | None = None) -> list[DemoRequest]:
    """Requests against the shipped policies: allow, 401, 403; a DPoP-bound token allowed with
    its key's proof and refused with another key's; a workload over mTLS."""
    from app.dev.dpop import DpopKey

    alice_key, thief_key = demo_dpop_keys(stack)
    bound = demo_token(
        stack,
        "alice",
        ["finance"],
        ["invoices:read"],
        now=now,
        extra_claims={"cnf": {"jkt": DpopKey.load(alice_key).jkt}},
    )
    finance = demo_token(stack, "alice", ["finance"], ["invoices:read"], now=now)
    contractor = demo_token(
        stack, "carol", ["contractors"], ["invoices:read", "invoices:write"], now=now, alg="ES256"
    )
    return [
        DemoRequest(
            "ALICE_TOKEN",
            "allowed: alice (group finance, scope invoices:read) reads invoices",
            "GET",
            "/invoices",
            finance,
            200,
        ),
        DemoRequest(
            "",
            "401: no token on a protected route",
            "GET",
            "/invoices",
            None,
            401,
            "token_missing",
        ),
        DemoRequest(
            "CAROL_TOKEN",
            "403: carol (group contractors) may never delete",
            "DELETE",
            "/invoices/42",
            contractor,
            403,
            "denied_by_rule",
        ),
        DemoRequest(
            "BOUND_TOKEN",
            "allowed: alice's DPoP-bound token (cnf.jkt) with a proof from her key",
            "GET",
            "/invoices",
            bound,
            200,
            dpop_key=alice_key,
        ),
        DemoRequest(
            "BOUND_TOKEN",
            "401: the same token replayed by someone else, with a proof from another key",
            "GET",
            "/invoices",
            bound,
            401,
            "dpop_key_mismatch",
            dpop_key=thief_key,
        ),
        *(
            []
            if stack.pki is None
            else [
                DemoRequest(
                    "",
                    f"workload: {DEMO_WORKLOAD_ID} (mTLS, no token) reads invoices",
                    "GET",
                    "/invoices",
                    None,
                    200,
                    workload=True,
                )
            ]
        ),
    ]


def send(stack: Stack, request: DemoRequest) -> Reply:
    """Send a demo request through Envoy (the mTLS one for workload requests); a DPoP request
    gets a fresh proof for this very request."""
    headers = {} if request.token is None else {"Authorization": f"Bearer {request.token}"}
    if request.dpop_key is not None and request.token is not None:
        from app.dev.dpop import DpopKey

        proof = DpopKey.load(request.dpop_key).proof(
            request.method, stack.envoy_url + request.path, access_token=request.token
        )
        headers = {"Authorization": f"DPoP {request.token}", "DPoP": proof}
    if request.workload and stack.pki is not None:
        return https_request(stack.ports.envoy_mtls, stack.pki, request.method, request.path)
    return http_request(stack.ports.envoy, request.method, request.path, headers)


def problems(request: DemoRequest, reply: Reply) -> list[str]:
    """What is wrong with ``reply`` for ``request`` (empty: as expected)."""
    found: list[str] = []
    if reply.status != request.expect_status:
        found.append(f"status {reply.status}, expected {request.expect_status}")
        return found
    body = reply.json()
    if request.expect_status == 200:
        upstream_headers = body.get("headers", {}) if isinstance(body, dict) else {}
        identity = "x-auth-workload" if request.workload else "x-auth-subject"
        if not upstream_headers.get(identity):
            found.append(f"the upstream did not receive {identity}")
        if not upstream_headers.get("x-auth-decision-id"):
            found.append("the upstream did not receive x-auth-decision-id")
    elif request.expect_status == 401 and not reply.headers.get("www-authenticate", "").startswith(
        ("Bearer ", "DPoP ")
    ):
        found.append("no Bearer or DPoP challenge in WWW-Authenticate")
    reason = body.get("reason") if isinstance(body, dict) else None
    if request.expect_reason is not None and reason != request.expect_reason:
        found.append(f"reason {reason!r}, expected {request.expect_reason!r}")
    return found


def curl_command(stack: Stack, request: DemoRequest) -> str:
    parts = ["curl", "-sS", "-i"]
    if request.method != "GET":
        parts += ["-X", request.method]
    base = stack.envoy_url
    if request.workload and stack.pki is not None:
        pki = stack.pki
        parts += ["--cacert", str(pki.ca), "--cert", str(pki.workload.certificate)]
        parts += ["--key", str(pki.workload.key)]
        base = stack.envoy_mtls_url
    command = " ".join(shlex.quote(p) for p in parts)
    if request.token is not None and request.dpop_key is not None:
        # A proof is single-use and lives a minute: the command makes a fresh one.
        proof = (
            f"ztauthz dev dpop-proof --key {shlex.quote(str(request.dpop_key))} "
            f"--method {request.method} --url {shlex.quote(base + request.path)} "
            f'--token "${request.name}"'
        )
        command += f' -H "Authorization: DPoP ${request.name}" -H "DPoP: $({proof})"'
    elif request.token is not None:
        command += f' -H "Authorization: Bearer ${request.name}"'
    return f"{command} {shlex.quote(base + request.path)}"


def summary(request: DemoRequest, reply: Reply) -> str:
    body = reply.json()
    if reply.status == 200 and isinstance(body, dict):
        seen = {k: v for k, v in body.get("headers", {}).items() if k.startswith("x-auth-")}
        return f"{reply.status}; the upstream received {json.dumps(seen, sort_keys=True)}"
    challenge = reply.headers.get("www-authenticate")
    extra = f"; WWW-Authenticate: {challenge}" if challenge else ""
    return f"{reply.status}{extra}; body {reply.body.decode('utf-8', 'replace')}"


# --- the command -----------------------------------------------------------------------------
