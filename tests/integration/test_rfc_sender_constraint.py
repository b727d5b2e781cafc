"""An independent check of sender-constrained tokens, written from RFC 9449 (DPoP) and RFC 8705
(certificate-bound tokens) alone, against the test stack in its default configuration.

Nothing here uses ztauthz's own DPoP code or dev helpers: proofs, JWKs, RFC 7638 thumbprints
and the access tokens are built below with ``cryptography`` and the standard library. The
only outside facts are the stack's addresses and its issuer's signing key (standing in for the
authorization server that issues bound tokens). Each test names the requirement it checks;
expectations are the RFCs' (401, the ``DPoP`` challenge with ``invalid_dpop_proof`` for a
proof that fails §4.3, ``invalid_token`` for a key binding that fails), never ztauthz's reason
codes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from app.dev.stack import Stack

pytestmark = pytest.mark.integration

ABSENT = object()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


# --- a DPoP client, from RFC 9449 §4 and RFC 7515/7518/7638/8037 ------------------------------


@dataclass
class Client:
    alg: str
    key: Any

    @classmethod
    def new(cls, alg: str) -> Client:
        if alg == "ES256":
            return cls(alg, ec.generate_private_key(ec.SECP256R1()))
        if alg == "RS256":
            return cls(alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return cls(alg, ed25519.Ed25519PrivateKey.generate())

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK (RFC 7518 §6, RFC 8037 §2)."""
        public = self.key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            numbers = public.public_numbers()
            return {
                "kty": "EC",
                "crv": "P-256",
                "x": b64url(numbers.x.to_bytes(32, "big")),
                "y": b64url(numbers.y.to_bytes(32, "big")),
            }
        if isinstance(public, rsa.RSAPublicKey):
            rsa_numbers = public.public_numbers()
            return {"kty": "RSA", "n": b64url_uint(rsa_numbers.n), "e": b64url_uint(rsa_numbers.e)}
        raw = public.public_bytes_raw()
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}

    def thumbprint(self) -> str:
        """RFC 7638 §3: SHA-256 over the required members, sorted, no whitespace."""
        jwk = self.jwk()
        required = {
            "EC": ("crv", "kty", "x", "y"),
            "RSA": ("e", "kty", "n"),
            "OKP": ("crv", "kty", "x"),
        }
        members = {name: jwk[name] for name in required[jwk["kty"]]}
        canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
        return b64url(hashlib.sha256(canonical.encode()).digest())

    def sign(self, signing_input: bytes) -> bytes:
        if self.alg == "ES256":
            r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # RFC 7518 §3.4
        if self.alg == "RS256":
            return bytes(self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()))
        return bytes(self.key.sign(signing_input))

    def proof(
        self,
        method: str,
        url: str,
        token: str | None,
        *,
        header: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
        iat: float | None = None,
    ) -> str:
        """A DPoP proof JWT (RFC 9449 §4.2); ``header``/``claims`` override members (ABSENT
        removes one)."""
        head: dict[str, Any] = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.jwk()}
        body: dict[str, Any] = {
            "jti": str(uuid.uuid4()),
            "htm": method,
            "htu": url,
            "iat": int(time.time() if iat is None else iat),
        }
        if token is not None:
            body["ath"] = b64url(hashlib.sha256(token.encode("ascii")).digest())
        for target, changes in ((head, header), (body, claims)):
            for name, value in (changes or {}).items():
                if value is ABSENT:
                    target.pop(name, None)
                else:
                    target[name] = value
        signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(body).encode())}"
        return f"{signing_input}.{b64url(self.sign(signing_input.encode()))}"


# --- the authorization server's side: a bound access token (RFC 9449 §6, RFC 8705 §3) --------


def access_token(stack: Stack, cnf: Mapping[str, str] | None) -> str:
    """An RS256 JWT access token (RFC 9068) from the stack's issuer, bound by ``cnf``."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": stack.issuer_url,
        "sub": "alice",
        "aud": stack.audience,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
        "groups": ["finance"],
        "scope": "invoices:read",
    }
    if cnf is not None:
        claims["cnf"] = dict(cnf)
    head = {"alg": "RS256", "typ": "at+jwt", "kid": stack.keys.rsa_kid}
    signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = stack.keys.rsa_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


# --- the requests --------------------------------------------------------------------------


PATH = "/invoices/42"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]

    def challenge(self) -> dict[str, str]:
        """The DPoP challenge's auth-params (RFC 9110 §11.6.1), {} when there is none."""
        value = self.headers.get("www-authenticate", "")
        at = value.find("DPoP")
        if at < 0:
            return {}
        params: dict[str, str] = {"scheme": "DPoP"}
        for part in value[at + 4 :].split(","):
            name, sep, raw = part.strip().partition("=")
            if sep:
                params[name.strip().lower()] = raw.strip().strip('"')
        return params


def url(stack: Stack, path: str = PATH) -> str:
    return f"http://127.0.0.1:{stack.ports.envoy}{path}"


def send(stack: Stack, headers: Sequence[tuple[str, str]], method: str = "GET") -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.envoy, timeout=10)
    try:
        conn.putrequest(method, PATH)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()})
    finally:
        conn.close()


def with_proof(token: str, proof: str) -> list[tuple[str, str]]:
    return [("Authorization", f"DPoP {token}"), ("DPoP", proof)]


def assert_invalid_proof(answer: Answer) -> None:
    """RFC 9449 §7.1: 401 with a DPoP challenge naming invalid_dpop_proof."""
    assert answer.status == 401
    assert answer.challenge().get("error") == "invalid_dpop_proof", answer.headers


def assert_invalid_token(answer: Answer) -> None:
    """RFC 9449 §7.1 / RFC 6750 §3.1: 401 with error invalid_token."""
    assert answer.status == 401
    assert 'error="invalid_token"' in answer.headers.get("www-authenticate", ""), answer.headers


@pytest.fixture(scope="module")
def client() -> Client:
    return Client.new("ES256")


@pytest.fixture
def bound(stack: Stack, client: Client) -> str:
    return access_token(stack, {"jkt": client.thumbprint()})


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_7_1_a_bound_token_with_a_valid_proof_is_accepted(stack: Stack, alg: str) -> None:
    holder = Client.new(alg)
    token = access_token(stack, {"jkt": holder.thumbprint()})
    assert send(stack, with_proof(token, holder.proof("GET", url(stack), token))).status == 200


def test_4_3_1_more_than_one_dpop_header_is_refused(
    stack: Stack, client: Client, bound: str
) -> None:
    first, second = (client.proof("GET", url(stack), bound) for _ in range(2))
    headers = [("Authorization", f"DPoP {bound}"), ("DPoP", first), ("DPoP", second)]
    assert_invalid_proof(send(stack, headers))


@pytest.mark.parametrize("value", ["not-a-jwt", "e30.e30.", "a.b.c"])
def test_4_3_2_a_proof_that_is_no_well_formed_jwt_is_refused(
    stack: Stack, bound: str, value: str
) -> None:
    assert_invalid_proof(send(stack, with_proof(bound, value)))


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat", "ath"])
def test_4_3_3_every_required_claim_must_be_present(
    stack: Stack, client: Client, bound: str, claim: str
) -> None:
    proof = client.proof("GET", url(stack), bound, claims={claim: ABSENT})
    assert_invalid_proof(send(stack, with_proof(bound, proof)))


@pytest.mark.parametrize("typ", [ABSENT, "JWT", "at+jwt"])
def test_4_3_4_typ_must_be_dpop_jwt(stack: Stack, client: Client, bound: str, typ: object) -> None:
    proof = client.proof("GET", url(stack), bound, header={"typ": typ})
    assert_invalid_proof(send(stack, with_proof(bound, proof)))


def test_4_3_5_alg_none_is_refused(stack: Stack, client: Client, bound: str) -> None:
    head = {"typ": "dpop+jwt", "alg": "none", "jwk": client.jwk()}
    body = {
        "jti": str(uuid.uuid4()),
        "htm": "GET",
        "htu": url(stack),
        "iat": int(time.time()),
        "ath": b64url(hashlib.sha256(bound.encode()).digest()),
    }
    proof = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(body).encode())}."
    assert_invalid_proof(send(stack, with_proof(bound, proof)))


def test_4_3_5_a_symmetric_alg_is_refused(stack: Stack, client: Client, bound: str) -> None:
    head = {"typ": "dpop+jwt", "alg": "HS256", "jwk": client.jwk()}
    body = {
        "jti": str(uuid.uuid4()),
        "htm": "GET",
        "htu": url(stack),
        "iat": int(time.time()),
        "ath": b64url(hashlib.sha256(bound.encode()).digest()),
    }
    signing_input = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(body).encode())}"
    mac = hmac.new(json.dumps(client.jwk()).encode(), signing_input.encode(), hashlib.sha256)
    proof = f"{signing_input}.{b64url(mac.digest())}"
    assert_invalid_proof(send(stack, with_proof(bound, proof)))


def test_4_3_6_the_signature_must_verify_with_the_jwk(
    stack: Stack, client: Client, bound: str
) -> None:
    other = Client.new("ES256")
    proof = client.proof("GET", url(stack), bound, header={"jwk": other.jwk()})
    assert send(stack, with_proof(bound, proof)).status == 401


def test_4_3_7_a_jwk_with_a_private_key_is_refused(
    stack: Stack, client: Client, bound: str
) -> None:
    private = dict(client.jwk())
    private["d"] = b64url(client.key.private_numbers().private_value.to_bytes(32, "big"))
    proof = client.proof("GET", url(stack), bound, header={"jwk": private})
    assert_invalid_proof(send(stack, with_proof(bound, proof)))


def test_4_3_8_htm_must_match_the_method(stack: Stack, client: Client, bound: str) -> None:
    proof = client.proof("POST", url(stack), bound)
    assert_invalid_proof(send(stack, with_proof(bound, proof)))


@pytest.mark.parametrize(
    "target", ["/invoices/43", "/other", "https-scheme", "another-host", "another-port"]
)
def test_4_3_9_htu_must_match_the_target_uri(
    stack: Stack, client: Client, bound: str, target: str
) -> None:
    port = stack.ports.envoy
    htu = {
        "https-scheme": f"https://127.0.0.1:{port}{PATH}",
        "another-host": f"http://127.0.0.2:{port}{PATH}",
        "another-port": f"http://127.0.0.1:{port + 1}{PATH}",
    }.get(target, url(stack, target))
    proof = client.proof("GET", htu, bound)
    assert_invalid_proof(send(stack, with_proof(bound, proof)))


def test_4_3_9_htu_ignores_query_and_fragment(stack: Stack, client: Client, bound: str) -> None:
    proof = client.proof("GET", url(stack) + "?page=1#part", bound)
    assert send(stack, with_proof(bound, proof)).status == 200


@pytest.mark.parametrize("offset", [-3600, 3600])
def test_4_3_11_iat_must_be_within_an_acceptable_window(
    stack: Stack, client: Client, bound: str, offset: int
) -> None:
    proof = client.proof("GET", url(stack), bound, iat=time.time() + offset)
    assert_invalid_proof(send(stack, with_proof(bound, proof)))


def test_4_3_12_ath_must_be_the_hash_of_the_presented_token(
    stack: Stack, client: Client, bound: str
) -> None:
    other = access_token(stack, {"jkt": client.thumbprint()})
    proof = client.proof("GET", url(stack), other)
    assert_invalid_proof(send(stack, with_proof(bound, proof)))


def test_4_3_12_the_proof_key_must_be_the_key_the_token_is_bound_to(
    stack: Stack, bound: str
) -> None:
    attacker = Client.new("ES256")
    proof = attacker.proof("GET", url(stack), bound)
    assert_invalid_token(send(stack, with_proof(bound, proof)))


def test_11_1_a_proof_is_accepted_once(stack: Stack, client: Client, bound: str) -> None:
    proof = client.proof("GET", url(stack), bound)
    assert send(stack, with_proof(bound, proof)).status == 200
    assert send(stack, with_proof(bound, proof)).status == 401


def test_7_2_a_bound_token_presented_as_a_bearer_token_is_refused(
    stack: Stack, client: Client, bound: str
) -> None:
    proof = client.proof("GET", url(stack), bound)
    answer = send(stack, [("Authorization", f"Bearer {bound}"), ("DPoP", proof)])
    assert_invalid_token(answer)


def test_7_1_a_dpop_token_needs_a_proof(stack: Stack, bound: str) -> None:
    assert send(stack, [("Authorization", f"DPoP {bound}")]).status == 401


def test_7_1_the_challenge_names_only_asymmetric_algorithms(
    stack: Stack, client: Client, bound: str
) -> None:
    answer = send(stack, with_proof(bound, client.proof("PUT", url(stack), bound)))
    algs = answer.challenge().get("algs", "").split()
    assert algs and "ES256" in algs
    assert not [a for a in algs if a == "none" or a.startswith("HS")]


def test_rfc8705_3_a_certificate_bound_token_without_that_certificate_is_refused(
    stack: Stack,
) -> None:
    # Plain HTTP: no client certificate at all, so the binding cannot hold (RFC 8705 §3.1).
    token = access_token(stack, {"x5t#S256": b64url(hashlib.sha256(b"some certificate").digest())})
    assert_invalid_token(send(stack, [("Authorization", f"Bearer {token}")]))
