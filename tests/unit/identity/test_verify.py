"""TokenVerifier: every attack refused with the right reason, valid tokens become Principals.

Keys come from real JwksCaches reading a real local discovery + JWKS server with two issuers
(A at the server root, B under /b) so cross-issuer confusion is tested against real key sets.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from app.identity.errors import TokenError
from app.identity.jwks import JwksCache, KeySource
from app.identity.principal import Principal
from app.identity.verify import TokenVerifier, build_key_sources
from app.reasons import Reason
from app.settings import ClaimNames, Issuer
from tests.unit.identity.identity_support import (
    NOW,
    FakeClock,
    IdpServer,
    b64json,
    b64url,
    claims,
    ec_key,
    ed_key,
    hmac_forged,
    jwks,
    make_issuer,
    mint,
    public_jwk,
    rsa_key,
    signed_raw,
    unsigned,
)

MAX_TOKEN_BYTES = 4096


@dataclass
class Env:
    idp: IdpServer
    a: str  # issuer A: RS256/PS256/ES256/EdDSA, keys rsa-a (no alg), rs-only (alg RS256), ec-a, ed-a
    b: str  # issuer B: RS256/ES256 only, key rsa-b, groups/scopes at nested/other claim names
    verifier: TokenVerifier
    clock: FakeClock
    caches: dict[str, JwksCache]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = FakeClock()
    with IdpServer.running() as idp:
        a, b = idp.url, idp.url + "/b"
        idp.publish(
            jwks(
                public_jwk(rsa_key("a"), "rsa-a"),
                public_jwk(rsa_key("a2"), "rs-only", alg="RS256", use="sig"),
                public_jwk(ec_key("a"), "ec-a"),
                public_jwk(ed_key("a"), "ed-a"),
                {"kty": "oct", "kid": "oct-a", "k": b64url(b"shared-secret-shared-secret!!")},
            )
        )
        idp.publish(jwks(public_jwk(rsa_key("b"), "rsa-b")), base="/b")
        issuers = [
            make_issuer(a, algorithms=["RS256", "PS256", "ES256", "EdDSA"]),
            make_issuer(b, claims=ClaimNames(groups="realm_access.roles", scopes="scp")),
        ]
        async with httpx.AsyncClient(trust_env=False) as client:
            caches = build_key_sources(issuers, client, clock)
            try:
                for cache in caches.values():
                    assert await cache.refresh(), cache.last_error
                verifier = TokenVerifier(issuers, caches, MAX_TOKEN_BYTES)
                yield Env(idp, a, b, verifier, clock, caches)
            finally:
                for cache in caches.values():
                    await cache.aclose()


async def refused(env: Env, token: str) -> Reason:
    with pytest.raises(TokenError) as caught:
        await env.verifier.verify(token, env.clock.now)
    return caught.value.reason


def segments(token: str) -> list[str]:
    return token.split(".")


def tamper_payload(token: str, **changes: Any) -> str:
    header, payload, signature = segments(token)
    padded = payload + "=" * (-len(payload) % 4)
    claims_ = json.loads(base64.urlsafe_b64decode(padded))
    claims_.update(changes)
    return f"{header}.{b64json(claims_)}.{signature}"


def flip_signature_bit(token: str) -> str:
    header, payload, signature = segments(token)
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{payload}.{b64url(bytes(raw))}"


def with_header(token: str, header: dict[str, Any]) -> str:
    _, payload, signature = segments(token)
    return f"{b64json(header)}.{payload}.{signature}"


def rsa_public_pem() -> bytes:
    return (
        rsa_key("a")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def good(env: Env, **changes: Any) -> str:
    return mint(rsa_key("a"), "RS256", claims(env.a, **changes), "rsa-a")


TokenMaker = Callable[[Env], str]

ATTACKS: list[tuple[str, TokenMaker, Reason]] = [
    # algorithm confusion
    (
        "alg none",
        lambda e: unsigned({"alg": "none", "kid": "rsa-a"}, claims(e.a)),
        Reason.TOKEN_ALGORITHM_NOT_ALLOWED,
    ),
    (
        "alg None",
        lambda e: unsigned({"alg": "None"}, claims(e.a)),
        Reason.TOKEN_ALGORITHM_NOT_ALLOWED,
    ),
    (
        "alg NONE, real signature kept",
        lambda e: with_header(good(e), {"alg": "NONE", "kid": "rsa-a"}),
        Reason.TOKEN_ALGORITHM_NOT_ALLOWED,
    ),
    (
        "alg missing",
        lambda e: unsigned({"kid": "rsa-a"}, claims(e.a)) + "c2ln",
        Reason.TOKEN_ALGORITHM_NOT_ALLOWED,
    ),
    (
        "alg not a string",
        lambda e: unsigned({"alg": ["RS256"]}, claims(e.a)) + "c2ln",
        Reason.TOKEN_ALGORITHM_NOT_ALLOWED,
    ),
    (
        "HS256 keyed with the public key PEM",
        lambda e: hmac_forged(rsa_public_pem(), {"alg": "HS256", "kid": "rsa-a"}, claims(e.a)),
        Reason.TOKEN_ALGORITHM_NOT_ALLOWED,
    ),
    (
        "HS256 keyed with the JWKS oct key",
        lambda e: hmac_forged(
            b"shared-secret-shared-secret!!", {"alg": "HS256", "kid": "oct-a"}, claims(e.a)
        ),
        Reason.TOKEN_ALGORITHM_NOT_ALLOWED,
    ),
    (
        "RS384 not in the allowlist",
        lambda e: mint(rsa_key("a"), "RS384", claims(e.a), "rsa-a"),
        Reason.TOKEN_ALGORITHM_NOT_ALLOWED,
    ),
    (
        "PS256 not allowed for issuer B",
        lambda e: mint(rsa_key("b"), "PS256", claims(e.b), "rsa-b"),
        Reason.TOKEN_ALGORITHM_NOT_ALLOWED,
    ),
    # key selection
    (
        "unknown kid",
        lambda e: mint(rsa_key("a"), "RS256", claims(e.a), "no-such-kid"),
        Reason.TOKEN_KEY_UNKNOWN,
    ),
    (
        "RSA kid under an ES256 header",
        lambda e: mint(ec_key("a"), "ES256", claims(e.a), "rsa-a"),
        Reason.TOKEN_KEY_UNKNOWN,
    ),
    (
        "EC kid under an RS256 header",
        lambda e: mint(rsa_key("a"), "RS256", claims(e.a), "ec-a"),
        Reason.TOKEN_KEY_UNKNOWN,
    ),
    (
        "RS256-only key under PS256",
        lambda e: mint(rsa_key("a2"), "PS256", claims(e.a), "rs-only"),
        Reason.TOKEN_KEY_UNKNOWN,
    ),
    (
        "oct kid under RS256",
        lambda e: mint(rsa_key("a"), "RS256", claims(e.a), "oct-a"),
        Reason.TOKEN_KEY_UNKNOWN,
    ),
    (
        "no kid, several RS256 keys",
        lambda e: mint(rsa_key("a"), "RS256", claims(e.a), None),
        Reason.TOKEN_KEY_UNKNOWN,
    ),
    (
        "issuer B token with issuer A's kid",
        lambda e: mint(rsa_key("a"), "RS256", claims(e.b), "rsa-a"),
        Reason.TOKEN_KEY_UNKNOWN,
    ),
    # signatures
    (
        "attacker key, real kid",
        lambda e: mint(rsa_key("evil"), "RS256", claims(e.a), "rsa-a"),
        Reason.TOKEN_SIGNATURE_INVALID,
    ),
    (
        "attacker key in jwk/jku headers",
        lambda e: mint(
            rsa_key("evil"),
            "RS256",
            claims(e.a),
            "rsa-a",
            jwk=public_jwk(rsa_key("evil"), "rsa-a"),
            jku=f"{e.idp.url}/evil-jwks",
        ),
        Reason.TOKEN_SIGNATURE_INVALID,
    ),
    (
        "issuer A key signing for issuer B",
        lambda e: mint(rsa_key("a"), "RS256", claims(e.b), "rsa-b"),
        Reason.TOKEN_SIGNATURE_INVALID,
    ),
    (
        "tampered payload",
        lambda e: tamper_payload(good(e), sub="admin"),
        Reason.TOKEN_SIGNATURE_INVALID,
    ),
    ("tampered signature", lambda e: flip_signature_bit(good(e)), Reason.TOKEN_SIGNATURE_INVALID),
    (
        "tampered ES256 signature",
        lambda e: flip_signature_bit(mint(ec_key("a"), "ES256", claims(e.a), "ec-a")),
        Reason.TOKEN_SIGNATURE_INVALID,
    ),
    (
        "signature stripped",
        lambda e: good(e).rsplit(".", 1)[0] + ".",
        Reason.TOKEN_SIGNATURE_INVALID,
    ),
    (
        "header swapped to another kid",
        lambda e: with_header(good(e), {"alg": "RS256", "kid": "rs-only"}),
        Reason.TOKEN_SIGNATURE_INVALID,
    ),
    # time
    ("expired", lambda e: good(e, iat=int(NOW) - 600, exp=int(NOW) - 60), Reason.TOKEN_EXPIRED),
    ("nbf in the future", lambda e: good(e, nbf=int(NOW) + 120), Reason.TOKEN_NOT_YET_VALID),
    (
        "iat in the future",
        lambda e: good(e, iat=int(NOW) + 120, exp=int(NOW) + 300),
        Reason.TOKEN_NOT_YET_VALID,
    ),
    (
        "lifetime over the maximum",
        lambda e: good(e, exp=int(NOW) + 3600),
        Reason.TOKEN_LIFETIME_EXCEEDED,
    ),
    # NaN is not JSON (RFC 8259 §6): the payload is refused before its claims are read
    ("exp NaN", lambda e: good(e, exp=float("nan")), Reason.TOKEN_MALFORMED),
    # claims
    ("missing exp", lambda e: good(e, exp=None), Reason.TOKEN_CLAIMS_MISSING),
    ("missing iat", lambda e: good(e, iat=None), Reason.TOKEN_CLAIMS_MISSING),
    ("missing sub", lambda e: good(e, sub=None), Reason.TOKEN_CLAIMS_MISSING),
    ("missing iss", lambda e: good(e, iss=None), Reason.TOKEN_CLAIMS_MISSING),
    ("iss not a string", lambda e: tamper_payload(good(e), iss=[e.a]), Reason.TOKEN_CLAIMS_INVALID),
    ("sub not a string", lambda e: good(e, sub=7), Reason.TOKEN_CLAIMS_INVALID),
    (
        "groups not strings",
        lambda e: good(e, groups=[{"admin": True}]),
        Reason.TOKEN_CLAIMS_INVALID,
    ),
    ("wrong aud", lambda e: good(e, aud="another-api"), Reason.TOKEN_AUDIENCE_INVALID),
    ("no aud", lambda e: good(e, aud=None), Reason.TOKEN_AUDIENCE_INVALID),
    (
        "unconfigured iss",
        lambda e: good(e, iss="https://evil.example"),
        Reason.TOKEN_ISSUER_UNKNOWN,
    ),
    ("iss with trailing slash", lambda e: good(e, iss=e.a + "/"), Reason.TOKEN_ISSUER_UNKNOWN),
    # type and header
    (
        "typ JWE",
        lambda e: mint(rsa_key("a"), "RS256", claims(e.a), "rsa-a", typ="JWE"),
        Reason.TOKEN_TYPE_INVALID,
    ),
    (
        "typ dpop+jwt",
        lambda e: mint(rsa_key("a"), "RS256", claims(e.a), "rsa-a", typ="dpop+jwt"),
        Reason.TOKEN_TYPE_INVALID,
    ),
    (
        "typ logout+jwt",
        lambda e: mint(rsa_key("a"), "RS256", claims(e.a), "rsa-a", typ="logout+jwt"),
        Reason.TOKEN_TYPE_INVALID,
    ),
    (
        "typ not a string",
        lambda e: mint(rsa_key("a"), "RS256", claims(e.a), "rsa-a", typ=1),
        Reason.TOKEN_TYPE_INVALID,
    ),
    (
        "crit understood by PyJWT",
        lambda e: mint(rsa_key("a"), "RS256", claims(e.a), "rsa-a", crit=["b64"]),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "crit unknown",
        lambda e: mint(rsa_key("a"), "RS256", claims(e.a), "rsa-a", crit=["urn:x"]),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "kid not a string",
        lambda e: unsigned({"alg": "RS256", "kid": 5}, claims(e.a)) + "c2ln",
        Reason.TOKEN_MALFORMED,
    ),
    (
        "b64 false",
        lambda e: unsigned({"alg": "RS256", "b64": False, "crit": ["b64"]}, claims(e.a)),
        Reason.TOKEN_MALFORMED,
    ),
    # size and garbage
    ("oversized", lambda e: good(e, pad="x" * MAX_TOKEN_BYTES), Reason.TOKEN_TOO_LARGE),
    ("oversized garbage", lambda e: "." * 100_000, Reason.TOKEN_TOO_LARGE),
    ("empty", lambda e: "", Reason.TOKEN_MALFORMED),
    ("one segment", lambda e: "abc", Reason.TOKEN_MALFORMED),
    ("two segments", lambda e: "abc.def", Reason.TOKEN_MALFORMED),
    ("dots", lambda e: "..", Reason.TOKEN_MALFORMED),
    ("bad base64", lambda e: "!!!.!!!.!!!", Reason.TOKEN_MALFORMED),
    (
        "header not JSON",
        lambda e: f"{b64url(b'not json')}.{b64json(claims(e.a))}.c2ln",
        Reason.TOKEN_MALFORMED,
    ),
    (
        "header a JSON array",
        lambda e: f"{b64json(['RS256'])}.{b64json(claims(e.a))}.c2ln",
        Reason.TOKEN_MALFORMED,
    ),
    (
        "payload a JSON array",
        lambda e: f"{b64json({'alg': 'RS256'})}.{b64json([1])}.c2ln",
        Reason.TOKEN_MALFORMED,
    ),
    (
        "payload not JSON",
        lambda e: f"{b64json({'alg': 'RS256'})}.{b64url(b'{')}.c2ln",
        Reason.TOKEN_MALFORMED,
    ),
    ("non-ASCII", lambda e: good(e)[:-2] + "\u00e9\u00e9", Reason.TOKEN_MALFORMED),
    ("JWE-shaped (5 segments)", lambda e: "a.b.c.d.e", Reason.TOKEN_MALFORMED),
]


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


RS256 = b'{"alg":"RS256","kid":"rsa-a"}'


def _signed(header: bytes, payload: bytes) -> str:
    return signed_raw(rsa_key("a"), header, payload)


def _payload(e: Env, **overrides: Any) -> bytes:
    return _json(claims(e.a, **overrides))


def _nested(levels: int, leaf: bytes = b"1", kind: str = "[") -> bytes:
    if kind == "[":
        return b"[" * levels + leaf + b"]" * levels
    return b'{"":' * levels + leaf + b"}" * levels


# Hostile JSON under a *valid* signature (issuer A's key): only the parser stands in the way.
SIGNED_JSON_ATTACKS: list[tuple[str, TokenMaker, Reason]] = [
    (
        "payload nested 1000 arrays deep",
        lambda e: _signed(RS256, _payload(e)[:-1] + b',"x":' + _nested(1000) + b"}"),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "payload nested 500 objects deep",
        lambda e: _signed(RS256, _payload(e)[:-1] + b',"x":' + _nested(500, kind="{") + b"}"),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "header nested 500 objects deep",
        lambda e: _signed(RS256[:-1] + b',"x":' + _nested(500, kind="{") + b"}", _payload(e)),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "payload nested 33 deep (one past the bound)",
        lambda e: _signed(RS256, _payload(e)[:-1] + b',"x":' + _nested(32) + b"}"),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "lone surrogate in sub",
        lambda e: _signed(RS256, _payload(e, sub="x").replace(b'"x"', b'"\\ud800"')),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "lone surrogate in a group",
        lambda e: _signed(RS256, _payload(e, groups=["x"]).replace(b'"x"', b'"a\\udfffb"')),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "payload in UTF-16",
        lambda e: _signed(RS256, json.dumps(claims(e.a)).encode("utf-16")),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "payload in UTF-16-LE without BOM",
        lambda e: _signed(RS256, json.dumps(claims(e.a)).encode("utf-16-le")),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "payload with a UTF-8 BOM",
        lambda e: _signed(RS256, b"\xef\xbb\xbf" + _payload(e)),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "header in UTF-32",
        lambda e: _signed(json.dumps({"alg": "RS256", "kid": "rsa-a"}).encode("utf-32"), b"{}"),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "duplicate sub (first one for other readers)",
        lambda e: _signed(RS256, b'{"sub":"admin",' + _payload(e)[1:]),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "duplicate alg in the header",
        lambda e: _signed(b'{"alg":"none","alg":"RS256","kid":"rsa-a"}', _payload(e)),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "duplicate name in a nested claim",
        lambda e: _signed(RS256, _payload(e)[:-1] + b',"cnf":{"jkt":"a","jkt":"b"}}'),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "exp Infinity",
        lambda e: _signed(RS256, _payload(e, exp=1).replace(b'"exp":1', b'"exp":Infinity')),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "exp 1e400 (overflows a double)",
        lambda e: _signed(RS256, _payload(e, exp=1).replace(b'"exp":1', b'"exp":1e400')),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "exp a 40-digit integer",
        lambda e: _signed(RS256, _payload(e, exp=10**40)),
        Reason.TOKEN_LIFETIME_EXCEEDED,
    ),
    (
        "exp beyond a double",
        lambda e: _signed(RS256, _payload(e, exp=10**400)),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "iat a 40-digit negative integer",
        lambda e: _signed(RS256, _payload(e, iat=-(10**40))),
        Reason.TOKEN_LIFETIME_EXCEEDED,
    ),
    (
        "auth_time a 30-digit integer",
        lambda e: _signed(RS256, _payload(e, auth_time=10**30)),
        Reason.TOKEN_CLAIMS_INVALID,
    ),
    (
        "a 2000-digit number",
        lambda e: _signed(RS256, _payload(e)[:-1] + b',"n":' + b"9" * 2000 + b"}"),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "kid a number",
        lambda e: _signed(b'{"alg":"RS256","kid":7}', _payload(e)),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "kid an object",
        lambda e: _signed(b'{"alg":"RS256","kid":{"a":"rsa-a"}}', _payload(e)),
        Reason.TOKEN_MALFORMED,
    ),
    (
        "alg a list",
        lambda e: _signed(b'{"alg":["RS256"],"kid":"rsa-a"}', _payload(e)),
        Reason.TOKEN_ALGORITHM_NOT_ALLOWED,
    ),
    (
        "typ a list",
        lambda e: _signed(b'{"alg":"RS256","kid":"rsa-a","typ":["JWT"]}', _payload(e)),
        Reason.TOKEN_TYPE_INVALID,
    ),
    (
        "typ null",
        lambda e: _signed(b'{"alg":"RS256","kid":"rsa-a","typ":null}', _payload(e)),
        Reason.TOKEN_TYPE_INVALID,
    ),
    (
        "scope split by a tab",
        lambda e: _signed(RS256, _payload(e, scope="openid\tapi:read")),
        Reason.TOKEN_CLAIMS_INVALID,
    ),
    (
        "scope split by a no-break space",
        lambda e: _signed(RS256, _payload(e, scope="openid\u00a0api:read")),
        Reason.TOKEN_CLAIMS_INVALID,
    ),
]


@pytest.mark.parametrize(
    ("make", "expected"),
    [case[1:] for case in SIGNED_JSON_ATTACKS],
    ids=[case[0] for case in SIGNED_JSON_ATTACKS],
)
async def test_hostile_json_under_a_valid_signature_is_refused(
    env: Env, make: TokenMaker, expected: Reason
) -> None:
    assert await refused(env, make(env)) is expected


async def test_a_long_kid_is_an_unknown_key(env: Env) -> None:
    header = _json({"alg": "RS256", "kid": "k" * 1500})
    assert await refused(env, _signed(header, _payload(env))) is Reason.TOKEN_KEY_UNKNOWN


async def test_the_signed_raw_helper_makes_valid_tokens(env: Env) -> None:
    """The attacks above differ from an accepted token only in the JSON they carry."""
    principal = await env.verifier.verify(_signed(RS256, _payload(env)), env.clock.now)
    assert principal.subject == "user-1"


@pytest.mark.parametrize(
    ("make", "expected"), [case[1:] for case in ATTACKS], ids=[case[0] for case in ATTACKS]
)
async def test_attack_is_refused(env: Env, make: TokenMaker, expected: Reason) -> None:
    assert await refused(env, make(env)) is expected


async def test_header_supplied_key_urls_are_never_fetched(env: Env) -> None:
    token = mint(
        rsa_key("evil"),
        "RS256",
        claims(env.a),
        "rsa-a",
        jku=f"{env.idp.url}/evil-jwks",
        x5u=f"{env.idp.url}/evil-cert",
    )
    assert await refused(env, token) is Reason.TOKEN_SIGNATURE_INVALID
    assert env.idp.hits("/evil-jwks") == env.idp.hits("/evil-cert") == 0


@pytest.mark.parametrize(
    ("key", "alg", "kid"),
    [
        (rsa_key("a"), "RS256", "rsa-a"),
        (rsa_key("a"), "PS256", "rsa-a"),  # a JWK without alg serves every RSA alg allowed
        (rsa_key("a2"), "RS256", "rs-only"),
        (ec_key("a"), "ES256", "ec-a"),
        (ed_key("a"), "EdDSA", "ed-a"),
        (ec_key("a"), "ES256", None),  # no kid: the only ES256 key
    ],
)
async def test_valid_tokens_verify(env: Env, key: Any, alg: str, kid: str | None) -> None:
    principal = await env.verifier.verify(mint(key, alg, claims(env.a), kid), NOW)
    assert (principal.issuer, principal.subject) == (env.a, "user-1")


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt", "AT+JWT", "application/at+jwt", None])
async def test_accepted_types(env: Env, typ: str | None) -> None:
    header = {"typ": typ} if typ else {"typ": None}
    token = mint(rsa_key("a"), "RS256", claims(env.a), "rsa-a", **header)
    assert (await env.verifier.verify(token, NOW)).subject == "user-1"


async def test_principal_from_verified_claims(env: Env) -> None:
    payload = claims(
        env.a,
        aud=["api", "other"],
        groups=["eng", "ops"],
        scope="orders:read  orders:write",
        jti="token-1",
        azp="web-app",
        iat=int(NOW) - 5,
        exp=int(NOW) + 295,
    )
    principal = await env.verifier.verify(mint(rsa_key("a"), "RS256", payload, "rsa-a"), NOW)
    assert principal == Principal(
        issuer=env.a,
        subject="user-1",
        groups=frozenset({"eng", "ops"}),
        scopes=frozenset({"orders:read", "orders:write"}),
        audience=("api", "other"),
        expires_at=int(NOW) + 295,
        issued_at=int(NOW) - 5,
        claims=principal.claims,
        token_id="token-1",
        client_id="web-app",
    )
    assert isinstance(principal.claims, MappingProxyType)
    assert dict(principal.claims) == payload
    with pytest.raises(TypeError):
        principal.claims["sub"] = "admin"  # type: ignore[index]


async def test_principal_claim_names_per_issuer(env: Env) -> None:
    payload = claims(
        env.b,
        realm_access={"roles": ["admin"]},
        groups=["ignored"],
        scp=["a", "b"],
        client_id="svc",
        azp="other",
    )
    principal = await env.verifier.verify(mint(rsa_key("b"), "RS256", payload, "rsa-b"), NOW)
    assert principal.groups == frozenset({"admin"})
    assert principal.scopes == frozenset({"a", "b"})
    assert principal.client_id == "svc"  # client_id wins over azp
    assert principal.token_id is None


async def test_idp_down_tokens_keep_verifying_until_stale(env: Env) -> None:
    token = good(env, iat=int(NOW) + 7200, exp=int(NOW) + 7500)
    env.idp.stop()
    env.clock.advance(7200)
    for cache in env.caches.values():
        assert not await cache.refresh()
    assert env.verifier.is_ready(env.clock.now)
    assert (await env.verifier.verify(token, env.clock.now)).subject == "user-1"
    env.clock.advance(86400)  # past the default max_staleness (24h)
    assert not env.verifier.is_ready(env.clock.now)
    assert await refused(env, token) is Reason.KEYS_UNAVAILABLE


async def test_is_ready_needs_every_issuer() -> None:
    with IdpServer.running() as idp:
        idp.publish(jwks(public_jwk(rsa_key("a"), "k")))
        issuers = [make_issuer(idp.url), make_issuer(idp.url + "/missing")]
        async with httpx.AsyncClient(trust_env=False) as client:
            caches = build_key_sources(issuers, client, FakeClock())
            verifier = TokenVerifier(issuers, caches, MAX_TOKEN_BYTES)
            assert not verifier.is_ready(NOW)
            assert await caches[idp.url].refresh()
            assert not await caches[idp.url + "/missing"].refresh()
            assert not verifier.is_ready(NOW)


class BrokenKeySource:
    """A KeySource with a bug: verify must not disguise it as a bad token."""

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def is_ready(self, now: float) -> bool:
        return True

    async def get_key(self, kid: str | None, alg: str, now: float) -> jwt.PyJWK:
        raise RuntimeError("bug in key source")


async def test_non_token_errors_propagate() -> None:
    issuer = make_issuer("https://idp.example")
    source: KeySource = BrokenKeySource()
    verifier = TokenVerifier([issuer], {issuer.issuer: source}, MAX_TOKEN_BYTES)
    token = mint(rsa_key("a"), "RS256", claims(issuer.issuer), "k")
    with pytest.raises(RuntimeError, match="bug in key source"):
        await verifier.verify(token, NOW)


def test_verifier_requires_a_source_per_issuer() -> None:
    with pytest.raises(ValueError, match="no key source"):
        TokenVerifier([make_issuer("https://idp.example")], {}, MAX_TOKEN_BYTES)


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], ["RS256", "HS512"]])
def test_configuration_never_allows_hmac_or_none(algorithms: list[str]) -> None:
    with pytest.raises(ValidationError):
        Issuer(issuer="https://idp.example", audiences=["api"], algorithms=algorithms)


async def test_error_details_never_contain_the_token(env: Env) -> None:
    for name, make, _ in ATTACKS:
        token = make(env)
        with pytest.raises(TokenError) as caught:
            await env.verifier.verify(token, NOW)
        for part in token.split("."):
            if len(part) > 16:
                assert part not in str(caught.value), name
