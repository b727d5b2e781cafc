"""Dev signing keys: one RSA-2048 key (RS256) and one EC P-256 key (ES256), kept as PEM files.

The dev issuer process and ``ztauthz dev token`` share one keys directory, so tokens minted by
the command verify against the JWKS the issuer serves. Private files are created 0600 inside a
0700 directory and are refused if other users can read them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

RSA_FILE = "rs256.pem"
EC_FILE = "es256.pem"
ALGORITHMS = ("RS256", "ES256")

# RFC 7638 section 3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}

DevPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class DevKeyError(Exception):
    """A keys directory or key file cannot be used (the message never holds key material)."""


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url without padding) of an RSA or EC key."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise ValueError(f"no thumbprint rule for key type {jwk.get('kty')!r}")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _kid(prefix: str, public_jwk: Mapping[str, Any]) -> str:
    digest = base64.urlsafe_b64decode(thumbprint(public_jwk) + "=")
    return f"{prefix}-{digest.hex()[:8]}"


def _rsa_public_jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"kty": jwk["kty"], "n": jwk["n"], "e": jwk["e"]}


def _ec_public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"kty": jwk["kty"], "crv": jwk["crv"], "x": jwk["x"], "y": jwk["y"]}


@dataclass(frozen=True, slots=True, eq=False)
class DevKeys:
    """The two dev signing keys and their key ids (``dev-rs256-<8 hex>``, ``dev-es256-<8 hex>``).

    Key ids are derived from the RFC 7638 thumbprint, so they change whenever the keys do.
    """

    rsa_key: rsa.RSAPrivateKey = field(repr=False)
    ec_key: ec.EllipticCurvePrivateKey = field(repr=False)
    rsa_kid: str = field(init=False)
    ec_kid: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.rsa_key, rsa.RSAPrivateKey) or self.rsa_key.key_size < 2048:
            raise DevKeyError("the RS256 dev key must be an RSA private key of at least 2048 bits")
        if not isinstance(self.ec_key, ec.EllipticCurvePrivateKey) or not isinstance(
            self.ec_key.curve, ec.SECP256R1
        ):
            raise DevKeyError("the ES256 dev key must be an EC P-256 private key")
        object.__setattr__(self, "rsa_kid", _kid("dev-rs256", _rsa_public_jwk(self.rsa_key)))
        object.__setattr__(self, "ec_kid", _kid("dev-es256", _ec_public_jwk(self.ec_key)))

    @classmethod
    def generate(cls) -> DevKeys:
        """Fresh keys, in memory only."""
        return cls(
            rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            ec_key=ec.generate_private_key(ec.SECP256R1()),
        )

    @classmethod
    def load_or_create(cls, directory: Path) -> DevKeys:
        """Load the keys kept in ``directory``, creating whichever file is missing.

        Safe when several processes start at once: a new key file is written aside and linked
        into place only if no other process got there first; the loser reads the winner's key.
        """
        directory = Path(directory)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if directory.stat().st_mode & 0o077:
                directory.chmod(0o700)
        except OSError as exc:
            raise DevKeyError(f"cannot prepare keys directory {directory}: {exc.strerror}") from exc
        rsa_key = _load_or_create(
            directory / RSA_FILE,
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        )
        ec_key = _load_or_create(
            directory / EC_FILE, lambda: ec.generate_private_key(ec.SECP256R1())
        )
        if not isinstance(rsa_key, rsa.RSAPrivateKey):
            raise DevKeyError(f"{directory / RSA_FILE} does not hold an RSA private key")
        if not isinstance(ec_key, ec.EllipticCurvePrivateKey):
            raise DevKeyError(f"{directory / EC_FILE} does not hold an EC private key")
        return cls(rsa_key=rsa_key, ec_key=ec_key)

    def public_jwk(self, alg: str) -> dict[str, Any]:
        """The public JWK for ``alg`` (RS256 or ES256) with kid, alg and use=sig."""
        if alg == "RS256":
            return {**_rsa_public_jwk(self.rsa_key), "kid": self.rsa_kid, "alg": alg, "use": "sig"}
        if alg == "ES256":
            return {**_ec_public_jwk(self.ec_key), "kid": self.ec_kid, "alg": alg, "use": "sig"}
        raise ValueError(f"unsupported dev algorithm {alg!r}; use one of {ALGORITHMS}")

    def jwks(self) -> dict[str, Any]:
        """The public JWKS: public members only, never d, p, q or other private parts."""
        return {"keys": [self.public_jwk(alg) for alg in ALGORITHMS]}

    def private_key_for(self, alg: str) -> tuple[str, DevPrivateKey]:
        """(kid, private key) to sign with ``alg`` (RS256 or ES256)."""
        if alg == "RS256":
            return self.rsa_kid, self.rsa_key
        if alg == "ES256":
            return self.ec_kid, self.ec_key
        raise ValueError(f"unsupported dev algorithm {alg!r}; use one of {ALGORITHMS}")

    def public_pem(self, alg: str = "RS256") -> bytes:
        """SubjectPublicKeyInfo PEM of the public key for ``alg``."""
        _, key = self.private_key_for(alg)
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _load_or_create(path: Path, generate: Callable[[], DevPrivateKey]) -> PrivateKeyTypes:
    try:
        return _read_private(path)
    except FileNotFoundError:
        pass
    key = generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _publish(path, pem)
    return _read_private(path)  # whoever won a creation race, everyone uses the same key


def _read_private(path: Path) -> PrivateKeyTypes:
    """Load an unencrypted PEM private key; refuse files other users can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DevKeyError(f"cannot read {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise DevKeyError(f"{path} is accessible to other users (mode {mode & 0o777:o}); chmod 600")
    try:
        data = path.read_bytes()
        return serialization.load_pem_private_key(data, password=None)
    except OSError as exc:
        raise DevKeyError(f"cannot read {path}: {exc.strerror}") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise DevKeyError(f"{path} is not an unencrypted PEM private key") from exc


def _publish(path: Path, pem: bytes) -> None:
    """Write ``pem`` to ``path`` (0600) atomically, unless the file already exists."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first; the caller reads theirs
        except OSError as exc:
            raise DevKeyError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        os.unlink(tmp)
