"""The assertion in the running service: a real Runtime (keys from a dev issuer served on
loopback), the check listener's app and the admin listener's JWKS, both driven over ASGI; the
gRPC rendering; ``ztauthz serve`` refusing a key file that cannot sign."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.check import Checker
from app.cli import main
from app.decision import Decision, SignedAssertion
from app.dev.issuer import create_issuer_app
from app.dev.tokens import mint
from app.reasons import Reason
from app.settings import Response, Settings
from app.state import Runtime
from app.telemetry.hub import Telemetry
from app.transport import grpc_wire
from app.transport.admin import JWKS_PATH, create_admin_app, etag_matches
from app.transport.http import CheckEndpoint
from app.transport.render import HEADERS_TO_REMOVE, render
from tests.unit.assertion.assertion_support import ALGORITHMS, write_key
from tests.unit.dev.dev_helpers import serving, shared_keys

POLICIES = Path(__file__).resolve().parents[2] / "integration" / "policies"
API = "https://api.example.com"
SIDECAR = "https://ztauthz.example/invoices"
UPSTREAM = "https://invoices.internal"


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with serving(lambda url: create_issuer_app(shared_keys(), url)) as url:
        yield url


def bearer(issuer: str, subject: str = "alice") -> dict[str, str]:
    token = mint(
        shared_keys(),
        issuer=issuer,
        audience=API,
        subject=subject,
        groups=["finance"],
        scopes=["invoices:read"],
    )
    return {"host": "api.example.com", "authorization": f"Bearer {token}"}


@dataclass
class Service:
    runtime: Runtime
    check: httpx.AsyncClient
    admin: httpx.AsyncClient
    log: io.StringIO

    async def jwks(self) -> bytes:
        reply = await self.admin.get(JWKS_PATH)
        assert reply.status_code == 200
        return reply.content


def config(issuer: str, keys: Path | None, **assertion: Any) -> Settings:
    section: dict[str, Any] = {}
    if keys is not None:
        section = {
            "enabled": True,
            "issuer": SIDECAR,
            "audience": UPSTREAM,
            "keys": str(keys),
            "signing_delay": "120s",
            "jwks_max_age": "120s",
        }
    section.update(assertion)
    return Settings.model_validate(
        {
            "issuers": [{"issuer": issuer, "audiences": [API]}],
            "policies": POLICIES,
            "assertion": section,
        }
    )


@asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[Service]:
    log = io.StringIO()
    async with Runtime(settings, telemetry=Telemetry.create(settings, stream=log)) as runtime:
        check = httpx.ASGITransport(app=CheckEndpoint(Checker(runtime)))
        admin = httpx.ASGITransport(app=create_admin_app(runtime))
        async with (
            httpx.AsyncClient(transport=check, base_url="http://check") as check_client,
            httpx.AsyncClient(transport=admin, base_url="http://admin") as admin_client,
        ):
            yield Service(runtime, check_client, admin_client, log)


def verify(token: str, jwks: bytes) -> dict[str, Any]:
    key = jwt.PyJWKSet.from_json(jwks.decode())[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=ALGORITHMS, audience=UPSTREAM, issuer=SIDECAR
    )
    return claims


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    write_key(tmp_path / "keys", "2025-06.pem")
    return tmp_path / "keys"


async def test_an_allow_carries_the_assertion_the_admin_jwks_verifies(
    issuer: str, keys: Path
) -> None:
    alice = bearer(issuer)
    async with service(config(issuer, keys)) as svc:
        reply = await svc.check.get("/check/invoices/42", headers=alice)
        assert reply.status_code == 200
        token = reply.headers["x-auth-assertion"]
        claims = verify(token, await svc.jwks())
        assert claims["sub"] == "alice"
        assert claims["groups"] == ["finance"]
        assert claims["decision"]["rule"] == "invoices-read"
        assert claims["decision"]["id"] == reply.headers["x-auth-decision-id"]
        removed = reply.headers[HEADERS_TO_REMOVE].split(",")
        assert "x-auth-assertion" not in removed
        # A credential for the upstream: never in the decision log.
        await svc.check.get("/check/invoices/42", headers=alice)  # the same token: reused
        metrics = (await svc.admin.get("/metrics")).text
        assert 'ztauthz_assertions_total{result="signed"} 1.0' in metrics
        assert 'ztauthz_assertions_total{result="reused"} 1.0' in metrics
    svc.runtime.telemetry.close()
    assert reply.headers["x-auth-decision-id"] in svc.log.getvalue()  # the line was written
    assert token not in svc.log.getvalue()
    assert token.split(".")[2] not in svc.log.getvalue()


async def test_a_client_sent_assertion_is_replaced_by_ztauthz_own(issuer: str, keys: Path) -> None:
    async with service(config(issuer, keys)) as svc:
        bob = (await svc.check.get("/check/invoices/1", headers=bearer(issuer, "bob"))).headers[
            "x-auth-assertion"
        ]
        # Alice replays Bob's (valid, still fresh) assertion and a forged one.
        for smuggled in (bob, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0."):
            reply = await svc.check.get(
                "/check/invoices/42", headers={**bearer(issuer), "x-auth-assertion": smuggled}
            )
            assert reply.status_code == 200
            answer = reply.headers["x-auth-assertion"]
            assert answer != smuggled
            assert verify(answer, await svc.jwks())["sub"] == "alice"


async def test_a_public_allow_carries_an_assertion_without_a_subject(
    issuer: str, keys: Path
) -> None:
    async with service(config(issuer, keys)) as svc:
        reply = await svc.check.get("/check/public/page", headers={"host": "api.example.com"})
        assert reply.status_code == 200
        claims = verify(reply.headers["x-auth-assertion"], await svc.jwks())
        assert "sub" not in claims
        assert claims["decision"]["rule"] == "public-read"


@pytest.mark.parametrize(
    ("path", "with_token", "status"), [("/invoices/42", False, 401), ("/internal/x", True, 403)]
)
async def test_a_denial_carries_no_assertion(
    issuer: str, keys: Path, path: str, with_token: bool, status: int
) -> None:
    headers = bearer(issuer) if with_token else {"host": "api.example.com"}
    async with service(config(issuer, keys)) as svc:
        reply = await svc.check.get(f"/check{path}", headers=headers)
        assert reply.status_code == status
        assert "x-auth-assertion" not in reply.headers


async def test_an_allow_that_cannot_be_signed_is_refused(issuer: str, keys: Path) -> None:
    async with service(config(issuer, keys)) as svc:
        assert svc.runtime.assertions is not None

        def broken(*args: object) -> Decision:
            raise RuntimeError("the HSM went away")

        svc.runtime.assertions.attach = broken  # type: ignore[method-assign,assignment]
        reply = await svc.check.get("/check/invoices/42", headers=bearer(issuer))
        assert reply.status_code == 503
        assert reply.json()["reason"] == "internal_error"
        assert "x-auth-assertion" not in reply.headers


async def test_the_jwks_is_cacheable_and_revalidates(issuer: str, keys: Path) -> None:
    async with service(config(issuer, keys)) as svc:
        reply = await svc.admin.get(JWKS_PATH)
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/jwk-set+json"
        assert reply.headers["cache-control"] == "public, max-age=120"
        etag = reply.headers["etag"]
        assert [key["kid"] for key in reply.json()["keys"]] == ["2025-06"]
        for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = await svc.admin.get(JWKS_PATH, headers={"if-none-match": sent})
            assert again.status_code == 304, sent
            assert again.content == b""
            assert again.headers["etag"] == etag
            assert again.headers["cache-control"] == "public, max-age=120"
        other = await svc.admin.get(JWKS_PATH, headers={"if-none-match": '"other"'})
        assert other.status_code == 200 and other.content == reply.content
        # A new key: a new document, a new validator.
        write_key(keys, "2025-07.pem")
        assert svc.runtime.assertions is not None and svc.runtime.assertions.reload()
        changed = await svc.admin.get(JWKS_PATH, headers={"if-none-match": etag})
        assert changed.status_code == 200
        assert changed.headers["etag"] != etag
        assert [key["kid"] for key in changed.json()["keys"]] == ["2025-06", "2025-07"]


async def test_with_the_assertion_off_there_is_no_jwks_and_a_client_header_is_removed(
    issuer: str,
) -> None:
    async with service(config(issuer, None)) as svc:
        assert (await svc.admin.get(JWKS_PATH)).status_code == 404
        reply = await svc.check.get(
            "/check/invoices/42", headers={**bearer(issuer), "x-auth-assertion": "forged"}
        )
        assert reply.status_code == 200
        assert "x-auth-assertion" not in reply.headers
        assert "x-auth-assertion" in reply.headers[HEADERS_TO_REMOVE].split(",")


def test_grpc_sets_the_assertion_overwriting_a_client_copy() -> None:
    decision = Decision(
        True,
        Reason.ALLOWED_ANONYMOUS,
        "d",
        "v",
        "public-read",
        "p",
        assertion=SignedAssertion("x-auth-assertion", "a.b.c"),
    )
    response = grpc_wire.to_check_response(render(decision, Response()), "allowed_anonymous")
    options = {o.header.key: o for o in response.ok_response.headers}
    assert options["x-auth-assertion"].header.value == "a.b.c"
    assert options["x-auth-assertion"].append_action == grpc_wire._OVERWRITE
    assert "x-auth-assertion" not in response.ok_response.headers_to_remove
    plain = Decision(True, Reason.ALLOWED_ANONYMOUS, "d", "v", "public-read", "p")
    response = grpc_wire.to_check_response(render(plain, Response()), "allowed_anonymous")
    assert "x-auth-assertion" in response.ok_response.headers_to_remove


def test_serve_exits_2_naming_a_key_file_that_cannot_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "2025-06.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    path = tmp_path / "ztauthz.yaml"
    path.write_text(
        json.dumps(
            {
                "issuers": [{"issuer": "https://idp.example.com", "audiences": [API]}],
                "policies": str(POLICIES),
                "assertion": {
                    "enabled": True,
                    "issuer": SIDECAR,
                    "audience": UPSTREAM,
                    "keys": "keys",  # relative to the configuration file
                },
            }
        )
    )
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "ztauthz: invalid configuration:",
        f"assertion.keys: {keys / '2025-06.pem'}: not a PEM private key (PKCS#8 or traditional)",
    ]


@given(header=st.text(max_size=200))
def test_if_none_match_is_read_without_surprises(header: str) -> None:
    etag = '"0123abcd"'
    listed = {part.strip().removeprefix("W/") for part in header.split(",")}
    assert etag_matches(header, etag) is ("*" in listed or etag in listed)
    assert etag_matches(f"{header},{etag}", etag) is True
