"""DPoP proof checks (RFC 9449 §4.3), one test per rule: each broken rule is refused with its
own reason code, a valid proof of every algorithm passes, and htu compares after RFC 3986
normalization."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from app.dev.dpop import DROP, DpopKey, ath
from app.identity.dpop import (
    DpopError,
    ProofRequest,
    ProofRules,
    normalize_uri,
    single_proof,
    target_uri,
    verify_proof,
)
from app.reasons import Reason

NOW = 1_800_000_000.0
URL = "https://api.example.com/invoices/42"
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
RULES = ProofRules(frozenset({"ES256", "RS256", "PS256", "EdDSA"}), 60.0, 5.0, 8192)
REQUEST = ProofRequest("GET", normalize_uri(URL), TOKEN)


@pytest.fixture(scope="module")
def key() -> DpopKey:
    return DpopKey.generate("ES256")


def proof(key: DpopKey, **kwargs: Any) -> str:
    kwargs.setdefault("access_token", TOKEN)
    kwargs.setdefault("now", NOW)
    return key.proof(kwargs.pop("method", "GET"), kwargs.pop("url", URL), **kwargs)


def refused(value: str | None, request: ProofRequest = REQUEST, now: float = NOW) -> Reason:
    with pytest.raises(DpopError) as info:
        verify_proof(value, request, RULES, now)
    return info.value.reason


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256", "EdDSA"])
def test_a_valid_proof_of_each_algorithm_passes(alg: str) -> None:
    key = DpopKey.generate(alg)
    checked = verify_proof(proof(key, jti="j-1"), REQUEST, RULES, NOW)
    assert checked.jkt == key.jkt
    assert (checked.jti, checked.iat, checked.nonce) == ("j-1", NOW, None)


def test_no_proof_and_two_proofs_are_refused(key: DpopKey) -> None:
    assert refused(None) is Reason.DPOP_PROOF_MISSING
    assert refused("  ") is Reason.DPOP_PROOF_MISSING
    # Envoy joins two DPoP header lines with a comma: two proofs.
    assert refused(f"{proof(key)},{proof(key)}") is Reason.DPOP_PROOF_MULTIPLE
    assert refused(f"{proof(key)}, {proof(key)}") is Reason.DPOP_PROOF_MULTIPLE


@pytest.mark.parametrize(
    "value", ["not-a-jwt", "a.b", "a.b.c.d", "é.b.c", "eyJ9.eyJ9.sig", "x" * 9000]
)
def test_what_is_no_compact_jws_is_malformed(value: str) -> None:
    assert refused(value) is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.parametrize("typ", [DROP, "JWT", "at+jwt", "dpop", "dpop+jwt+x", 42])
def test_typ_must_be_dpop_jwt(key: DpopKey, typ: object) -> None:
    assert refused(proof(key, headers={"typ": typ})) is Reason.DPOP_PROOF_TYPE_INVALID


@pytest.mark.parametrize("typ", ["DPoP+JWT", "application/dpop+jwt"])
def test_typ_compares_as_a_media_type(key: DpopKey, typ: str) -> None:
    verify_proof(proof(key, headers={"typ": typ}), REQUEST, RULES, NOW)


def _resigned(key: DpopKey, header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(secret)}"


@pytest.mark.parametrize("alg", ["none", "HS256", "ES384", "RS512", "", None])
def test_alg_must_be_in_the_asymmetric_allowlist(key: DpopKey, alg: str | None) -> None:
    claims = {"jti": "x", "htm": "GET", "htu": URL, "iat": NOW, "ath": ath(TOKEN)}
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": key.public_jwk}
    assert (
        refused(_resigned(key, header, claims, b"sig")) is Reason.DPOP_PROOF_ALGORITHM_NOT_ALLOWED
    )


def test_an_hmac_proof_signed_with_the_public_key_is_refused(key: DpopKey) -> None:
    import hashlib
    import hmac

    claims = {"jti": "x", "htm": "GET", "htu": URL, "iat": NOW, "ath": ath(TOKEN)}
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": key.public_jwk}
    unsigned = _resigned(key, header, claims, b"").rstrip(".")
    mac = hmac.new(json.dumps(key.public_jwk).encode(), unsigned.encode(), hashlib.sha256)
    forged = f"{unsigned}.{base64.urlsafe_b64encode(mac.digest()).rstrip(b'=').decode()}"
    assert refused(forged) is Reason.DPOP_PROOF_ALGORITHM_NOT_ALLOWED


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat", "ath"])
def test_every_required_claim_is_required(key: DpopKey, claim: str) -> None:
    assert refused(proof(key, claims={claim: DROP})) is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("jti", 7),
        ("jti", ""),
        ("jti", "j" * 257),
        ("htm", ["GET"]),
        ("htu", None),
        ("iat", "1800000000"),
        ("iat", True),
        ("ath", 1),
        ("nonce", 5),
        ("nonce", ""),
    ],
)
def test_claims_of_the_wrong_type_are_malformed(key: DpopKey, claim: str, value: object) -> None:
    assert refused(proof(key, claims={claim: value})) is Reason.DPOP_PROOF_MALFORMED


@pytest.mark.parametrize("htm", ["POST", "get", "HEAD"])
def test_htm_must_be_the_request_method(key: DpopKey, htm: str) -> None:
    assert refused(proof(key, method=htm)) is Reason.DPOP_PROOF_METHOD_MISMATCH


@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example.com/invoices/43",
        "http://api.example.com/invoices/42",
        "https://other.example.com/invoices/42",
        "https://api.example.com:8443/invoices/42",
        "https://api.example.com/invoices",
        "https://user@api.example.com/invoices/42",
        "/invoices/42",
        "ftp://api.example.com/invoices/42",
    ],
)
def test_htu_must_be_the_request_uri(key: DpopKey, htu: str) -> None:
    assert refused(proof(key, url=htu)) is Reason.DPOP_PROOF_URI_MISMATCH


@pytest.mark.parametrize(
    "htu",
    [
        "https://api.example.com/invoices/42?page=2",  # query ignored
        "https://api.example.com/invoices/42#top",  # fragment ignored
        "HTTPS://API.Example.COM/invoices/42",  # scheme and host case
        "https://api.example.com:443/invoices/42",  # default port
        "https://api.example.com/invoices/./42",  # dot segments
        "https://api.example.com/x/../invoices/42",
        "https://api.example.com/%69nvoices/42",  # unreserved percent-encoded
    ],
)
def test_htu_compares_after_normalization(key: DpopKey, htu: str) -> None:
    verify_proof(proof(key, url=htu), REQUEST, RULES, NOW)


def test_an_unknown_request_uri_refuses_every_proof(key: DpopKey) -> None:
    request = ProofRequest("GET", None, TOKEN)
    assert refused(proof(key), request) is Reason.DPOP_PROOF_URI_MISMATCH


@pytest.mark.parametrize("iat", [NOW - 61, NOW + 6, NOW - 10_000])
def test_iat_must_lie_within_the_window(key: DpopKey, iat: float) -> None:
    assert refused(proof(key, now=iat)) is Reason.DPOP_PROOF_IAT_INVALID


@pytest.mark.parametrize("iat", [NOW - 60, NOW + 5, NOW])
def test_iat_at_the_window_edges_passes(key: DpopKey, iat: float) -> None:
    verify_proof(proof(key, now=iat), REQUEST, RULES, NOW)


def test_ath_must_hash_the_presented_token(key: DpopKey) -> None:
    assert refused(proof(key, access_token="another-token")) is Reason.DPOP_PROOF_ATH_MISMATCH


@pytest.mark.parametrize(
    "jwk",
    [
        DROP,
        "a string",
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},  # not on the curve
        {"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA"},  # curve does not suit ES256
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},  # type does not suit ES256
    ],
)
def test_jwk_must_be_a_valid_public_key_suiting_alg(key: DpopKey, jwk: object) -> None:
    assert refused(proof(key, headers={"jwk": jwk})) is Reason.DPOP_PROOF_KEY_INVALID


def test_a_jwk_with_private_members_is_refused(key: DpopKey) -> None:
    leaked = {**key.public_jwk, "d": "c2VjcmV0"}
    assert refused(proof(key, headers={"jwk": leaked})) is Reason.DPOP_PROOF_KEY_INVALID


def test_a_small_rsa_key_is_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.warnings import InsecureKeyLengthWarning

    weak = DpopKey("RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 - the weak key under test
    with pytest.warns(InsecureKeyLengthWarning):  # PyJWT, signing the test's proof
        value = proof(weak)
    assert refused(value) is Reason.DPOP_PROOF_KEY_INVALID


def test_the_signature_must_verify_with_the_jwk(key: DpopKey) -> None:
    other = DpopKey.generate("ES256")
    # Signed by `key`, but claims `other`'s public key.
    assert refused(proof(key, headers={"jwk": other.public_jwk})) is (
        Reason.DPOP_PROOF_SIGNATURE_INVALID
    )
    head, body, signature = proof(key).split(".")
    tampered = f"{head}.{body}.{signature[:-4]}AAAA"
    assert refused(tampered) is Reason.DPOP_PROOF_SIGNATURE_INVALID


def test_the_nonce_is_returned_for_the_caller_to_check(key: DpopKey) -> None:
    checked = verify_proof(proof(key, nonce="abc"), REQUEST, RULES, NOW)
    assert checked.nonce == "abc"


def test_an_error_never_echoes_the_proof(key: DpopKey) -> None:
    value = proof(key, method="POST")
    with pytest.raises(DpopError) as info:
        verify_proof(value, REQUEST, RULES, NOW)
    assert value not in str(info.value)
    assert value.split(".")[1] not in str(info.value)


def test_single_proof_trims_surrounding_whitespace(key: DpopKey) -> None:
    value = proof(key)
    assert single_proof(f" {value}\t") == value


@pytest.mark.parametrize(
    ("uri", "normalized"),
    [
        ("https://a.example/", "https://a.example/"),
        ("https://a.example", "https://a.example/"),
        ("http://A.EXAMPLE:80/p", "http://a.example/p"),
        ("http://a.example:8080/p", "http://a.example:8080/p"),
        ("https://a.example:/p", "https://a.example/p"),
        ("https://a.example/a/b/../c/./d", "https://a.example/a/c/d"),
        ("https://a.example/%7euser/%2f%2F", "https://a.example/~user/%2F%2F"),
        ("https://[2001:DB8::1]:443/x", "https://[2001:db8::1]/x"),
        ("https://a.example/p?q=1#f", "https://a.example/p"),
    ],
)
def test_normalize_uri(uri: str, normalized: str) -> None:
    assert normalize_uri(uri) == normalized


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "a.example/p",
        "mailto:x@a.example",
        "https://u:p@a.example/",
        "https://a.example:99999/",
        "https://a.example:x/",
        "https://a.example/\n",
        "https://a.example/é",
        "https://a b/",
    ],
)
def test_normalize_uri_refuses_what_is_no_http_target(uri: str) -> None:
    assert normalize_uri(uri) is None


def test_target_uri_needs_a_known_http_scheme() -> None:
    assert target_uri("https", "api.example.com:443", "/x") == "https://api.example.com/x"
    assert target_uri(None, "api.example.com", "/x") is None
    assert target_uri("gopher", "api.example.com", "/x") is None
