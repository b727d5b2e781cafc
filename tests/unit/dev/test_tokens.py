from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest

from app.dev.keys import DevKeys
from app.dev.tokens import (
    CLIENT_ID,
    DROP,
    forge_alg_none,
    forge_hs256_with_public_key,
    mint,
    standard_claims,
    tamper_header,
    tamper_payload,
    tamper_signature,
)
from tests.unit.dev.dev_helpers import shared_keys

ISSUER = "http://127.0.0.1:9400"
AUDIENCE = "ztauthz-demo"
NOW = 1_700_000_000.0


@pytest.fixture
def dev_keys() -> DevKeys:
    return shared_keys()


def _verify(keys: DevKeys, token: str, **options: Any) -> dict[str, Any]:
    """Verify the way a relying party would: key by kid from the public JWKS, asymmetric only."""
    kid = jwt.get_unverified_header(token).get("kid")
    key = jwt.PyJWKSet.from_dict(keys.jwks())[str(kid)]
    decoded: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256", "ES256"],
        audience=options.pop("audience", AUDIENCE),
        issuer=ISSUER,
        **options,
    )
    return decoded


def _segment(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    loaded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return loaded


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_minted_token_verifies_against_the_public_jwks(dev_keys: DevKeys, alg: str) -> None:
    token = mint(
        dev_keys,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="alice",
        groups=["finance", "staff"],
        scopes=["invoices:read", "invoices:write"],
        alg=alg,
        ttl=120,
    )
    claims = _verify(dev_keys, token)
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "alice"
    assert claims["aud"] == AUDIENCE
    assert claims["groups"] == ["finance", "staff"]
    assert claims["scope"] == "invoices:read invoices:write"
    assert claims["client_id"] == CLIENT_ID
    assert claims["exp"] - claims["iat"] == 120
    assert abs(claims["iat"] - time.time()) < 5
    assert uuid.UUID(claims["jti"]).version == 4
    header = jwt.get_unverified_header(token)
    kid, _ = dev_keys.private_key_for(alg)
    assert header == {"alg": alg, "kid": kid, "typ": "at+jwt"}


def test_each_token_gets_its_own_jti(dev_keys: DevKeys) -> None:
    tokens = [
        mint(dev_keys, issuer=ISSUER, audience=AUDIENCE, subject="alice", now=NOW) for _ in range(3)
    ]
    assert len({_segment(t, 1)["jti"] for t in tokens}) == 3


def test_clock_is_passed_in(dev_keys: DevKeys) -> None:
    token = mint(dev_keys, issuer=ISSUER, audience=AUDIENCE, subject="a", now=NOW, ttl=300)
    claims = _segment(token, 1)
    assert (claims["iat"], claims["exp"]) == (int(NOW), int(NOW) + 300)
    with pytest.raises(jwt.ExpiredSignatureError):
        _verify(dev_keys, token)


def test_list_audience_and_empty_groups_and_scopes(dev_keys: DevKeys) -> None:
    token = mint(dev_keys, issuer=ISSUER, audience=[AUDIENCE, "other"], subject="bob")
    claims = _verify(dev_keys, token)
    assert claims["aud"] == [AUDIENCE, "other"]
    assert "groups" not in claims
    assert "scope" not in claims


@pytest.mark.parametrize(
    ("extra", "absent", "expected"),
    [
        ({"exp": DROP}, {"exp"}, {}),
        ({"iat": DROP, "jti": DROP}, {"iat", "jti"}, {}),
        ({"sub": "mallory", "acr": "mfa"}, set(), {"sub": "mallory", "acr": "mfa"}),
        ({"groups": DROP}, {"groups"}, {}),
        ({"amr": ["pwd", "otp"]}, set(), {"amr": ["pwd", "otp"]}),
    ],
    ids=["drop-exp", "drop-iat-jti", "override-and-add", "drop-groups", "list-claim"],
)
def test_extra_claims_override_or_drop(
    dev_keys: DevKeys, extra: dict[str, Any], absent: set[str], expected: dict[str, Any]
) -> None:
    token = mint(
        dev_keys,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="alice",
        groups=["finance"],
        extra_claims=extra,
    )
    claims = _verify(dev_keys, token, options={"require": []})
    assert not absent & set(claims)
    for name, value in expected.items():
        assert claims[name] == value


def test_headers_override_and_typ_can_be_left_out(dev_keys: DevKeys) -> None:
    token = mint(
        dev_keys, issuer=ISSUER, audience=AUDIENCE, subject="a", headers={"kid": "unknown"}
    )
    assert jwt.get_unverified_header(token)["kid"] == "unknown"
    untyped = mint(dev_keys, issuer=ISSUER, audience=AUDIENCE, subject="a", typ=None)
    assert "typ" not in jwt.get_unverified_header(untyped)
    _verify(dev_keys, untyped)
    kidless = mint(dev_keys, issuer=ISSUER, audience=AUDIENCE, subject="a", headers={"kid": DROP})
    assert "kid" not in jwt.get_unverified_header(kidless)


def test_standard_claims_are_what_mint_signs(dev_keys: DevKeys) -> None:
    expected = standard_claims(
        issuer=ISSUER, audience=AUDIENCE, subject="a", groups=["g"], scopes=["s"], now=NOW
    )
    token = mint(
        dev_keys,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject="a",
        groups=["g"],
        scopes=["s"],
        now=NOW,
        extra_claims={"jti": expected["jti"]},
    )
    assert _segment(token, 1) == expected


@pytest.fixture
def good_claims() -> dict[str, Any]:
    return standard_claims(issuer=ISSUER, audience=AUDIENCE, subject="alice", groups=["admin"])


def test_alg_none_is_unsigned_and_refused(dev_keys: DevKeys, good_claims: dict[str, Any]) -> None:
    token = forge_alg_none(good_claims, headers={"kid": dev_keys.rsa_kid})
    assert token.endswith(".")
    assert jwt.get_unverified_header(token)["alg"] == "none"
    assert _segment(token, 1) == good_claims
    with pytest.raises(jwt.InvalidTokenError):
        _verify(dev_keys, token)


def test_hs256_with_public_key_is_a_real_hmac_and_refused(
    dev_keys: DevKeys, good_claims: dict[str, Any]
) -> None:
    token = forge_hs256_with_public_key(dev_keys, good_claims)
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == ("HS256", dev_keys.rsa_kid)
    signing_input, _, signature = token.rpartition(".")
    # A verifier that confused the algorithms would compute exactly this:
    expected = hmac.new(dev_keys.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "=") == expected
    with pytest.raises(jwt.InvalidTokenError):
        _verify(dev_keys, token)
    with pytest.raises(jwt.InvalidKeyError):  # PyJWT also refuses a PEM as an HMAC secret
        jwt.decode(token, dev_keys.public_pem(), algorithms=["HS256"], audience=AUDIENCE)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_tampered_payload_keeps_signature_and_is_refused(dev_keys: DevKeys, alg: str) -> None:
    token = mint(dev_keys, issuer=ISSUER, audience=AUDIENCE, subject="alice", alg=alg)
    forged = tamper_payload(token, sub="admin", groups=["root"], jti=DROP)
    assert forged.split(".")[0] == token.split(".")[0]
    assert forged.split(".")[2] == token.split(".")[2]
    claims = _segment(forged, 1)
    assert (claims["sub"], claims["groups"], "jti" in claims) == ("admin", ["root"], False)
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(dev_keys, forged)


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_tampered_signature_is_refused(dev_keys: DevKeys, alg: str) -> None:
    token = mint(dev_keys, issuer=ISSUER, audience=AUDIENCE, subject="alice", alg=alg)
    forged = tamper_signature(token)
    assert forged.split(".")[:2] == token.split(".")[:2]
    assert forged != token
    assert len(forged) == len(token)
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(dev_keys, forged)


def test_tampered_header_is_refused(dev_keys: DevKeys) -> None:
    token = mint(dev_keys, issuer=ISSUER, audience=AUDIENCE, subject="alice")
    forged = tamper_header(token, typ="JWT")
    assert jwt.get_unverified_header(forged)["typ"] == "JWT"
    assert forged.split(".")[1:] == token.split(".")[1:]
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(dev_keys, forged)


@pytest.mark.parametrize("bad", ["a.b", "a.b.c.d", "only"])
def test_tamper_helpers_refuse_non_jws(bad: str) -> None:
    with pytest.raises(ValueError, match="three"):
        tamper_signature(bad)
    with pytest.raises(ValueError, match="three"):
        tamper_payload(bad, sub="x")
