"""cnf enforcement (app/identity/binding.py): DPoP-bound tokens need the DPoP scheme, a valid
proof with the bound key, a fresh jti and (when on) a current nonce; certificate-bound tokens
need the client certificate Envoy verified; a replay cache that cannot answer refuses."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from app.dev.dpop import DpopKey
from app.dev.pki import make_ca
from app.identity.binding import (
    Confirmation,
    SenderBinding,
    certificate_thumbprint,
    confirmation_of,
    request_scheme,
)
from app.identity.dpop import ProofRules
from app.identity.dpop_nonce import NonceIssuer
from app.identity.errors import TokenError
from app.identity.extract import Credential
from app.reasons import Reason
from app.request import RequestContext, make_context
from app.store import StoreUnavailable
from app.store.health import StoreHealth
from app.store.memory import MemoryStore

NOW = 1_800_000_000.0
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
URL = "https://api.example.com/invoices/42"
RULES = ProofRules(frozenset({"ES256", "RS256", "PS256", "EdDSA"}), 60.0, 5.0, 8192)


class BrokenStore(MemoryStore):
    async def add_once(self, namespace: str, key: str, ttl: float) -> bool:
        raise StoreUnavailable("redis add_once: ConnectionError: refused")


def binding(store: MemoryStore | None = None, **kwargs: object) -> SenderBinding:
    store = store if store is not None else MemoryStore(clock=lambda: NOW)
    health = StoreHealth(store, lambda: NOW, interval=1.0, unready_after=30.0)
    return SenderBinding(RULES, store, health, **kwargs)  # type: ignore[arg-type]


def ctx(proof: str | None = None, *, scheme: str = "https", **kwargs: object) -> RequestContext:
    headers = {"x-forwarded-proto": scheme}
    if proof is not None:
        headers["dpop"] = proof
    return make_context("GET", "api.example.com", "/invoices/42?x=1", headers, **kwargs)  # type: ignore[arg-type]


async def refused(
    check: SenderBinding,
    request: RequestContext,
    credential: Credential,
    claims: Mapping[str, object],
) -> Reason:
    with pytest.raises(TokenError) as info:
        await check.enforce(request, credential, claims, NOW)
    return info.value.reason


DPOP = Credential("dpop", TOKEN)
BEARER = Credential("bearer", TOKEN)


@pytest.fixture(scope="module")
def key() -> DpopKey:
    return DpopKey.generate("ES256")


def bound(key: DpopKey) -> dict[str, object]:
    return {"sub": "alice", "cnf": {"jkt": key.jkt}}


async def test_a_bound_token_with_its_proof_passes(key: DpopKey) -> None:
    proof = key.proof("GET", URL, access_token=TOKEN, now=NOW)
    confirmation = await binding().enforce(ctx(proof), DPOP, bound(key), NOW)
    assert confirmation == Confirmation(jkt=key.jkt)


async def test_a_plain_bearer_token_needs_nothing_and_a_stray_proof_is_ignored() -> None:
    assert await binding().enforce(ctx("garbage"), BEARER, {"sub": "alice"}, NOW) is None


async def test_a_bound_token_as_bearer_is_refused(key: DpopKey) -> None:
    proof = key.proof("GET", URL, access_token=TOKEN, now=NOW)
    assert await refused(binding(), ctx(proof), BEARER, bound(key)) is Reason.TOKEN_BOUND_AS_BEARER
    cookie = Credential("cookie", TOKEN)
    assert await refused(binding(), ctx(proof), cookie, bound(key)) is Reason.TOKEN_BOUND_AS_BEARER


async def test_the_dpop_scheme_with_an_unbound_token_is_refused(key: DpopKey) -> None:
    proof = key.proof("GET", URL, access_token=TOKEN, now=NOW)
    check = binding()
    assert await refused(check, ctx(proof), DPOP, {"sub": "a"}) is Reason.DPOP_TOKEN_UNBOUND
    certificate_only = {"cnf": {"x5t#S256": "abc"}}
    assert await refused(check, ctx(proof), DPOP, certificate_only) is Reason.DPOP_TOKEN_UNBOUND


async def test_a_proof_from_another_key_is_refused(key: DpopKey) -> None:
    thief = DpopKey.generate("ES256")
    proof = thief.proof("GET", URL, access_token=TOKEN, now=NOW)
    assert await refused(binding(), ctx(proof), DPOP, bound(key)) is Reason.DPOP_KEY_MISMATCH


async def test_a_replayed_proof_is_refused_even_by_another_binding_on_the_same_store(
    key: DpopKey,
) -> None:
    store = MemoryStore(clock=lambda: NOW)
    proof = key.proof("GET", URL, access_token=TOKEN, now=NOW)
    await binding(store).enforce(ctx(proof), DPOP, bound(key), NOW)
    assert await refused(binding(store), ctx(proof), DPOP, bound(key)) is Reason.DPOP_PROOF_REPLAYED


async def test_a_missing_proof_is_refused(key: DpopKey) -> None:
    assert await refused(binding(), ctx(None), DPOP, bound(key)) is Reason.DPOP_PROOF_MISSING


async def test_the_scheme_comes_from_what_envoy_saw(key: DpopKey) -> None:
    proof = key.proof("GET", URL, access_token=TOKEN, now=NOW)
    plain = ctx(proof, scheme="http")
    assert await refused(binding(), plain, DPOP, bound(key)) is Reason.DPOP_PROOF_URI_MISMATCH
    # No x-forwarded-proto and no gRPC scheme: the URI is unknown, every proof refused.
    unknown = make_context("GET", "api.example.com", "/invoices/42", {"dpop": proof})
    assert await refused(binding(), unknown, DPOP, bound(key)) is Reason.DPOP_PROOF_URI_MISMATCH
    grpc = make_context(
        "GET", "api.example.com", "/invoices/42", {"dpop": proof}, "grpc", scheme="https"
    )
    await binding().enforce(grpc, DPOP, bound(key), NOW)


def test_request_scheme_prefers_envoys_header_and_refuses_odd_values() -> None:
    assert request_scheme(make_context("GET", "h", "/", {"x-forwarded-proto": "HTTPS"})) == "https"
    assert request_scheme(make_context("GET", "h", "/", {"x-forwarded-proto": "wss"})) is None
    assert request_scheme(make_context("GET", "h", "/", {}, "grpc", scheme="http")) == "http"


async def test_the_replay_cache_down_refuses_and_marks_the_store_down(key: DpopKey) -> None:
    store = BrokenStore()
    health = StoreHealth(store, lambda: NOW, interval=1.0, unready_after=30.0)
    check = SenderBinding(RULES, store, health)
    proof = key.proof("GET", URL, access_token=TOKEN, now=NOW)
    assert await refused(check, ctx(proof), DPOP, bound(key)) is Reason.STORE_UNAVAILABLE
    assert not health.up
    assert "ConnectionError" in str(health.status().last_error)
    assert health.ready(NOW + 29) and not health.ready(NOW + 30)


async def test_nonces_when_on(key: DpopKey) -> None:
    nonces = NonceIssuer(b"n" * 32, 300.0)
    check = binding(nonces=nonces)
    without = key.proof("GET", URL, access_token=TOKEN, now=NOW)
    assert await refused(check, ctx(without), DPOP, bound(key)) is Reason.DPOP_NONCE_REQUIRED
    stale = key.proof("GET", URL, access_token=TOKEN, now=NOW, nonce=nonces.current(NOW - 600))
    assert await refused(check, ctx(stale), DPOP, bound(key)) is Reason.DPOP_NONCE_REQUIRED
    other_secret = NonceIssuer(b"o" * 32, 300.0).current(NOW)
    foreign = key.proof("GET", URL, access_token=TOKEN, now=NOW, nonce=other_secret)
    assert await refused(check, ctx(foreign), DPOP, bound(key)) is Reason.DPOP_NONCE_REQUIRED
    # Another replica with the same secret issued it: accepted, no shared state.
    current = key.proof(
        "GET", URL, access_token=TOKEN, now=NOW, nonce=NonceIssuer(b"n" * 32, 300.0).current(NOW)
    )
    await check.enforce(ctx(current), DPOP, bound(key), NOW)
    assert check.nonce(NOW) == nonces.current(NOW)


@pytest.mark.parametrize(
    ("cnf", "reason"),
    [
        ("jkt", Reason.TOKEN_CLAIMS_INVALID),
        ({"jkt": 5}, Reason.TOKEN_CLAIMS_INVALID),
        ({"x5t#S256": ""}, Reason.TOKEN_CLAIMS_INVALID),
        ({"jwk": {"kty": "EC"}}, Reason.TOKEN_BINDING_UNSUPPORTED),
        ({}, Reason.TOKEN_BINDING_UNSUPPORTED),
    ],
)
def test_a_cnf_that_cannot_be_enforced_refuses_the_token(cnf: object, reason: Reason) -> None:
    with pytest.raises(TokenError) as info:
        confirmation_of({"cnf": cnf})
    assert info.value.reason is reason


def _certificate(tmp_path: Path) -> tuple[str, str]:
    pair = make_ca(tmp_path / "ca").issue("client", uris=["spiffe://example.org/ns/a/sa/b"])
    pem = pair.pem()
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    return pem, thumbprint


async def test_a_certificate_bound_token_over_grpc(tmp_path: Path) -> None:
    pem, thumbprint = _certificate(tmp_path)
    other, _ = _certificate(tmp_path / "other")
    claims = {"cnf": {"x5t#S256": thumbprint}}
    good = ctx(transport="grpc", peer_certificate=quote(pem))
    assert await binding().enforce(good, BEARER, claims, NOW) == Confirmation(x5t_s256=thumbprint)
    wrong = ctx(transport="grpc", peer_certificate=quote(other))
    assert await refused(binding(), wrong, BEARER, claims) is Reason.TOKEN_CERTIFICATE_MISMATCH
    assert await refused(binding(), ctx(transport="grpc"), BEARER, claims) is (
        Reason.TOKEN_CERTIFICATE_MISMATCH
    )


async def test_a_certificate_bound_token_over_http_needs_a_trusted_xfcc(tmp_path: Path) -> None:
    pem, thumbprint = _certificate(tmp_path)
    digest_hex = hashlib.sha256(
        x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
    ).hexdigest()
    claims = {"cnf": {"x5t#S256": thumbprint}}
    by_hash = make_context("GET", "h", "/", {"x-forwarded-client-cert": f"Hash={digest_hex}"})
    by_cert = make_context(
        "GET", "h", "/", {"x-forwarded-client-cert": f'Hash=00;Cert="{quote(pem)}"'}
    )
    trusted = binding(trust_xfcc=True)
    await trusted.enforce(by_hash, BEARER, claims, NOW)
    await trusted.enforce(by_cert, BEARER, claims, NOW)
    # Envoy not configured to sanitize and set XFCC: a client could have written it.
    assert await refused(binding(), by_hash, BEARER, claims) is Reason.TOKEN_CERTIFICATE_MISMATCH
    two = make_context(
        "GET", "h", "/", {"x-forwarded-client-cert": f"Hash={digest_hex},Hash={digest_hex}"}
    )
    assert await refused(trusted, two, BEARER, claims) is Reason.TOKEN_CERTIFICATE_MISMATCH


def test_certificate_thumbprint_of_garbage_is_none() -> None:
    assert (
        certificate_thumbprint(ctx(transport="grpc", peer_certificate="not a pem"), False) is None
    )
    bad = make_context("GET", "h", "/", {"x-forwarded-client-cert": "Hash=zz"})
    assert certificate_thumbprint(bad, True) is None
