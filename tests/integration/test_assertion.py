"""The signed identity assertion through real Envoy, over HTTP and gRPC ext_authz.

Each transport gets its own stack (dev issuer, echo upstream, ``ztauthz serve`` with the
assertion on, Envoy running the shipped bootstrap) with one change to the bootstrap: the
``header_mutation`` filter that strips client-sent ``x-auth-*`` headers is taken out, so that
only ztauthz's own answer stands between a smuggled assertion and the upstream. The upstream's
view (the echo) is verified as an upstream would: with PyJWT against the JWKS fetched from the
admin listener, and with the documented examples (docs/examples/assertion/, PyJWT and Node.js
jose). The last test rotates the signing key under continuous traffic and verification.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

from app.dev.envoy import TRANSPORTS, Transport, shipped_envoy_config, transport_env
from app.dev.procs import ProcessGroup
from app.dev.stack import Reply, Stack, http_request, start_stack
from app.dev.stack_config import Ports
from app.dev.tokens import mint
from tests.unit.assertion.assertion_support import write_key

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXAMPLES = ROOT / "docs" / "examples" / "assertion"
NODE_MODULES = ROOT / "tests" / "interop" / "node_modules"
SIDECAR = "https://ztauthz.test/api-sidecar"
API_UPSTREAM = "https://invoices.internal"
PUBLIC_UPSTREAM = "https://public.internal"
HEADER = "x-auth-assertion"
ALGORITHMS = ["ES256", "EdDSA", "RS256"]


def without_client_header_stripping(template: Path, destination: Path) -> Path:
    """The shipped bootstrap minus its first defence (Envoy dropping client x-auth-*)."""
    config = yaml.safe_load(template.read_text(encoding="utf-8"))
    removed = 0
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                manager = network_filter["typed_config"]
                kept = [
                    f
                    for f in manager["http_filters"]
                    if f["name"] != "envoy.filters.http.header_mutation"
                ]
                removed += len(manager["http_filters"]) - len(kept)
                manager["http_filters"] = kept
    assert removed == 1, "the shipped bootstrap should strip client x-auth-* headers once"
    destination.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return destination


@dataclass(frozen=True, slots=True)
class AssertionStack:
    stack: Stack
    transport: Transport
    keys: Path

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.ports.admin}/.well-known/jwks.json"

    def jwks(self) -> bytes:
        with urllib.request.urlopen(self.jwks_url, timeout=10) as reply:
            body: bytes = reply.read()
        return body

    def token(self, subject: str) -> str:
        return mint(
            self.stack.keys,
            issuer=self.stack.issuer_url,
            audience=self.stack.audience,
            subject=subject,
            groups=["finance"],
            scopes=["invoices:read"],
        )

    def get(self, path: str, subject: str | None = None, **headers: str) -> Reply:
        sent = dict(headers)
        if subject is not None:
            sent["Authorization"] = f"Bearer {self.token(subject)}"
        return http_request(self.stack.ports.envoy, "GET", path, sent)


def received(reply: Reply) -> list[str]:
    """Every assertion header the upstream received (each copy, not a joined value)."""
    assert reply.status == 200, f"did not reach the upstream: {reply.status} {reply.body!r}"
    echo = reply.json()
    return [value for name, value in echo["header_list"] if name.lower() == HEADER]


def verify(token: str, jwks: bytes, audience: str = API_UPSTREAM) -> dict[str, Any]:
    key = jwt.PyJWKSet.from_json(jwks.decode())[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=ALGORITHMS, audience=audience, issuer=SIDECAR
    )
    return claims


@pytest.fixture(scope="module", params=TRANSPORTS)
def ast(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    child_env: dict[str, str],
) -> Iterator[AssertionStack]:
    transport: Transport = request.param
    workdir = tmp_path_factory.mktemp(f"assertion-{transport}")
    keys = workdir / "assertion-keys"
    write_key(keys, "2025-01.pem", "ec", written_at=time.time() - 3600)
    config = yaml.safe_load((HERE / "ztauthz.yaml").read_text(encoding="utf-8"))
    config["assertion"] = {
        "enabled": True,
        "issuer": SIDECAR,
        "audience": API_UPSTREAM,
        "routes": [{"audience": PUBLIC_UPSTREAM, "path_prefixes": ["/public"]}],
        "keys": str(keys),
        "reload_interval": "200ms",
        # Short, for the rotation test: verifiers below keep the JWKS for 1 s at most.
        "jwks_max_age": "1s",
        "signing_delay": "2s",
    }
    template = without_client_header_stripping(
        shipped_envoy_config(transport), workdir / f"envoy-{transport}-template.yaml"
    )
    ports = Ports.ephemeral()
    with ProcessGroup() as group:
        stack = start_stack(
            group,
            workdir=workdir,
            ports=ports,
            policies=HERE / "policies",
            config=config,
            envoy_template=template,
            env={**child_env, **transport_env(transport, ports.check)},
        )
        yield AssertionStack(stack, transport, keys)


def test_the_upstream_receives_an_assertion_that_verifies_against_the_admin_jwks(
    ast: AssertionStack,
) -> None:
    subject = f"alice-{ast.transport}-1"
    reply = ast.get("/invoices/42", subject)
    [token] = received(reply)
    claims = verify(token, ast.jwks())
    assert claims["sub"] == subject
    assert claims["sub_id"] == {"format": "iss_sub", "iss": ast.stack.issuer_url, "sub": subject}
    assert claims["groups"] == ["finance"]
    assert claims["scope"] == "invoices:read"
    assert claims["exp"] - claims["iat"] == 60
    # The first allow for this principal minted it: its decision is this request's.
    headers = reply.json()["headers"]
    assert claims["decision"]["id"] == headers["x-auth-decision-id"]
    assert claims["decision"]["rule"] == "invoices-read"
    assert claims["decision"]["policy_version"] == headers["x-auth-policy-version"]
    assert jwt.get_unverified_header(token)["typ"] == "ztauthz-assertion+jwt"


def test_the_audience_follows_the_route(ast: AssertionStack) -> None:
    [token] = received(ast.get("/public/page"))
    claims = verify(token, ast.jwks(), audience=PUBLIC_UPSTREAM)
    assert "sub" not in claims  # an anonymous allow
    assert claims["decision"]["rule"] == "public-read"
    with pytest.raises(jwt.InvalidAudienceError):
        verify(token, ast.jwks(), audience=API_UPSTREAM)


def test_a_client_sent_assertion_never_reaches_the_upstream(ast: AssertionStack) -> None:
    victim = f"bob-{ast.transport}"
    [bobs] = received(ast.get("/invoices/1", victim))  # valid, fresh, and Bob's
    forged = jwt.encode({"iss": SIDECAR, "aud": API_UPSTREAM, "sub": "root"}, "k" * 32)
    for smuggled in (bobs, forged, "garbage"):
        for path, subject in (("/invoices/42", f"mallory-{ast.transport}"), ("/public/x", None)):
            [token] = received(ast.get(path, subject, **{HEADER: smuggled}))
            assert token != smuggled
            audience = PUBLIC_UPSTREAM if path.startswith("/public") else API_UPSTREAM
            claims = verify(token, ast.jwks(), audience=audience)
            assert claims.get("sub") == subject


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "jose").is_dir():
        pytest.fail("Node.js and tests/interop/node_modules are needed: run `make npm`")
    return node


def test_the_documented_verifiers_accept_the_assertion(ast: AssertionStack, tmp_path: Path) -> None:
    subject = f"carol-{ast.transport}"
    [token] = received(ast.get("/invoices/7", subject))
    args = [ast.jwks_url, SIDECAR, API_UPSTREAM]
    python = subprocess.run(
        [sys.executable, str(EXAMPLES / "verify_assertion.py"), *args],
        input=token,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert python.returncode == 0, python.stderr
    assert json.loads(python.stdout)["sub"] == subject
    # Node resolves "jose" beside the script: run a copy next to the interop node_modules.
    (tmp_path / "node_modules").symlink_to(NODE_MODULES)
    script = tmp_path / "verify-assertion.mjs"
    shutil.copy(EXAMPLES / "verify-assertion.mjs", script)
    node = subprocess.run(
        [_node(), str(script), *args],
        input=token,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("NODE_")},
    )
    assert node.returncode == 0, node.stderr
    assert json.loads(node.stdout)["sub"] == subject
    # Both refuse it for another upstream.
    wrong = [ast.jwks_url, SIDECAR, "https://elsewhere.internal"]
    refused = subprocess.run(
        [sys.executable, str(EXAMPLES / "verify_assertion.py"), *wrong],
        input=token,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode != 0 and "InvalidAudienceError" in refused.stderr


# --- rotation: last, it changes the stack's keys ----------------------------------------------


class Verifier:
    """An upstream under traffic: every request through Envoy, its assertion verified with a
    PyJWKClient that keeps the JWKS as long as the admin listener's max-age (1 s)."""

    def __init__(self, ast: AssertionStack) -> None:
        self.ast = ast
        self.keys = jwt.PyJWKClient(ast.jwks_url, lifespan=1)
        self.kids: list[str] = []
        self.tokens: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 60  # bounded whatever happens
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            n += 1
            try:
                [token] = received(self.ast.get("/invoices/9", f"dave-{self.ast.transport}-{n}"))
                jwt.decode(
                    token,
                    self.keys.get_signing_key_from_jwt(token),
                    algorithms=ALGORITHMS,
                    audience=API_UPSTREAM,
                    issuer=SIDECAR,
                )
                self.kids.append(jwt.get_unverified_header(token)["kid"])
                self.tokens.append(token)
            except Exception as exc:  # every failure is a finding
                self.failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)

    def __enter__(self) -> Verifier:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def until(self, condition: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out; kids seen {sorted(set(self.kids))}"
            time.sleep(0.1)


def test_a_key_rotation_fails_no_verification(ast: AssertionStack) -> None:
    with Verifier(ast) as upstream:
        upstream.until(lambda: len(upstream.kids) >= 5)
        old_token = upstream.tokens[-1]
        # Add the new key (Ed25519: algorithms may change with a rotation too).
        write_key(ast.keys, "2025-06.pem", "ed25519", written_at=time.time())
        upstream.until(lambda: b'"2025-06"' in ast.jwks())  # published first ...
        published = [k["kid"] for k in json.loads(ast.jwks())["keys"]]
        assert published == ["2025-01", "2025-06"]
        upstream.until(lambda: upstream.kids[-1:] == ["2025-06"])  # ... then signing with it
        upstream.until(lambda: upstream.kids[-5:] == ["2025-06"] * 5)
    assert upstream.failures == []
    kids = upstream.kids
    switch = kids.index("2025-06")
    assert set(kids[:switch]) == {"2025-01"} and set(kids[switch:]) == {"2025-06"}
    # An assertion signed before the switch still verifies until it expires.
    assert verify(old_token, ast.jwks())["sub"].startswith("dave-")
    # Retiring the old key (once its assertions have expired) unpublishes it.
    (ast.keys / "2025-01.pem").unlink()
    deadline = time.monotonic() + 10
    while b'"2025-01"' in ast.jwks():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert [k["kid"] for k in json.loads(ast.jwks())["keys"]] == ["2025-06"]
