"""Dev DPoP keys and proofs (RFC 9449), for the local stack, ``ztauthz dev dpop-proof`` and
tests: what a DPoP client does, so that bound tokens can be demonstrated end to end.

A ``DpopKey`` is one client key pair (ES256, RS256, PS256 or EdDSA), kept as a PEM file by
the command line (0600). ``jkt`` is its RFC 7638 thumbprint, which a bound token carries as
``cnf.jkt``; ``proof`` signs a proof for one request.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import JWKRegistry
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from app.dev.cli_dpop import DPOP_ALGORITHMS

DROP = object()  # a header or claim value that removes the member (for broken proofs)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _generate(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg in ("RS256", "PS256"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported DPoP algorithm {alg!r}; choose one of {DPOP_ALGORITHMS}")


@dataclass(frozen=True, slots=True, eq=False)
class DpopKey:
    alg: str
    private_key: PrivateKey = field(repr=False)

    @classmethod
    def generate(cls, alg: str = "ES256") -> DpopKey:
        return cls(alg, _generate(alg))

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK with its required members only (no private ones)."""
        public = self.private_key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
            return {m: jwk[m] for m in ("kty", "crv", "x", "y")}
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
            return {m: jwk[m] for m in ("kty", "n", "e")}
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        return {m: jwk[m] for m in ("kty", "crv", "x")}

    @property
    def jkt(self) -> str:
        """RFC 7638 thumbprint of the public key: the token's ``cnf.jkt``."""
        return str(JWKRegistry.import_key(self.public_jwk).thumbprint())

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        now: float | None = None,
        jti: str | None = None,
        headers: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A proof for ``method url`` (RFC 9449 §4.2). ``headers``/``claims`` override members
        (``DROP`` removes one) to build broken proofs in tests."""
        body: dict[str, Any] = {
            "jti": jti or secrets.token_urlsafe(16),
            "htm": method,
            "htu": url,
            "iat": int(time.time() if now is None else now),
        }
        if access_token is not None:
            body["ath"] = ath(access_token)
        if nonce is not None:
            body["nonce"] = nonce
        head: dict[str, Any] = {"typ": "dpop+jwt", "jwk": self.public_jwk}
        for target, changes in ((head, headers), (body, claims)):
            for name, value in (changes or {}).items():
                if value is DROP:
                    target.pop(name, None)
                else:
                    target[name] = value
        typ = head.pop("typ", None)
        # PyJWT writes typ itself: passing it through headers keeps our value (or none).
        return jwt.encode(body, self.private_key, algorithm=self.alg, headers={**head, "typ": typ})

    def save(self, path: Path) -> None:
        """Write the private key as PKCS#8 PEM, readable by its owner only."""
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(pem)

    @classmethod
    def load(cls, path: Path, alg: str | None = None) -> DpopKey:
        """The key in ``path``; ``alg`` defaults to ES256, RS256 or EdDSA by key type."""
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            default = "ES256"
        elif isinstance(key, rsa.RSAPrivateKey):
            default = "RS256"
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            default = "EdDSA"
        else:
            raise ValueError(f"{path}: not an EC P-256, RSA or Ed25519 private key")
        return cls(alg or default, key)


def ath(access_token: str) -> str:
    """base64url(SHA-256(token)): the proof's ``ath`` (RFC 9449 §4.2)."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
