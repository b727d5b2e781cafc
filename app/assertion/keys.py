"""The assertion's signing keys: PEM files, their ``kid``, the JWKS, and which key signs.

A key is one PEM private key (PKCS#8 or traditional, unencrypted) in a file of its own; its
``kid`` is the file name without extension. ``keys`` in the configuration names one such file
or a directory of them: every visible file of the directory is a key, so that a mounted
Kubernetes secret (one data key per signing key, ``..data`` links hidden) works as it is.

Algorithms follow the key type (RFC 7518 §3.1, RFC 8037 §3.1): an EC P-256 key signs ES256, an
Ed25519 key EdDSA, an RSA key of at least 2048 bits (RFC 7518 §3.3) RS256. Anything else is
refused with the file named, never guessed.

Rotation: every key is published in the JWKS (RFC 7517 §5); the one that signs is the newest
(the most recently written file; among files written together, as a Kubernetes secret's are,
the greatest ``kid``) among those written at least ``signing_delay`` ago, so that verifiers
caching the JWKS have seen a key before it is used. When no key is that old yet (a first
deployment, or the old key removed together with the new one added), the oldest signs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

MAX_KEY_FILE_BYTES = 64 * 1024
MIN_RSA_BITS = 2048
_KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_EXTENSIONS = (".pem", ".key")

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class KeyFileError(Exception):
    """A key file that cannot sign. ``str()`` is one line naming the file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    algorithm: str  # ES256 | EdDSA | RS256
    private_key: PrivateKey = field(repr=False)
    public_jwk: Mapping[str, str] = field(repr=False)
    written_at: float  # the file's modification time (epoch seconds)


def kid_of(path: Path) -> str:
    name = path.name
    for extension in _EXTENSIONS:
        if name.lower().endswith(extension) and len(name) > len(extension):
            return name[: -len(extension)]
    return name


def _algorithm_and_jwk(private_key: Any) -> tuple[PrivateKey, str, dict[str, Any]]:
    """The key, the algorithm it signs with and its public JWK; ``ValueError`` otherwise."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError(f"EC curve {private_key.curve.name} is not supported (use P-256)")
        return private_key, "ES256", ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key, "EdDSA", OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {private_key.key_size} bits (at least {MIN_RSA_BITS})")
        return private_key, "RS256", RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    raise ValueError(
        f"{type(private_key).__name__} keys are not supported (use EC P-256, Ed25519 or RSA)"
    )


def load_key(path: Path) -> SigningKey:
    """One signing key from its file; ``KeyFileError`` naming the file otherwise."""
    kid = kid_of(path)
    if _KID.fullmatch(kid) is None:
        raise KeyFileError(
            path, "the file name (the key's kid) must be letters, digits, '.', '_' or '-'"
        )
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
        written_at = path.stat().st_mtime
    except OSError as exc:
        raise KeyFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(path, f"larger than {MAX_KEY_FILE_BYTES} bytes: not a key file")
    try:
        loaded = load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(path, "the private key is encrypted; give it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(path, "not a PEM private key (PKCS#8 or traditional)") from None
    try:
        private_key, algorithm, jwk = _algorithm_and_jwk(loaded)
    except ValueError as exc:
        raise KeyFileError(path, str(exc)) from None
    jwk.pop("key_ops", None)  # "use" says it (RFC 7517 §4.3: not both)
    public = {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}
    return SigningKey(
        kid=kid,
        algorithm=algorithm,
        private_key=private_key,
        public_jwk=MappingProxyType(public),
        written_at=written_at,
    )


def key_files(root: Path) -> list[Path]:
    """The key files ``root`` names: itself, or every visible entry of the directory."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise KeyFileError(root, "no such file or directory")
    entries = sorted(entry for entry in root.iterdir() if not entry.name.startswith("."))
    if not entries:
        raise KeyFileError(root, "the directory holds no key file")
    return entries


def load_keys(root: Path) -> tuple[SigningKey, ...]:
    """Every key under ``root``, oldest first; ``KeyFileError`` at the first bad file."""
    keys: list[SigningKey] = []
    seen: dict[str, Path] = {}
    for path in key_files(root):
        if not path.is_file():
            raise KeyFileError(path, "not a regular file (a key directory holds key files only)")
        key = load_key(path)
        if key.kid in seen:
            raise KeyFileError(path, f"kid {key.kid!r} again (also {seen[key.kid].name})")
        seen[key.kid] = path
        keys.append(key)
    return tuple(sorted(keys, key=lambda k: (k.written_at, k.kid)))


@dataclass(frozen=True, slots=True)
class KeyRing:
    """One loaded set of keys (oldest first) and its published JWKS."""

    keys: tuple[SigningKey, ...]
    jwks: bytes = field(repr=False)
    etag: str  # a strong validator of ``jwks`` (RFC 9110 §8.8.3)

    @classmethod
    def of(cls, keys: tuple[SigningKey, ...]) -> KeyRing:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        published = sorted((dict(key.public_jwk) for key in keys), key=lambda jwk: jwk["kid"])
        body = orjson.dumps({"keys": published}, option=orjson.OPT_SORT_KEYS)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return cls(keys, body, etag)

    def signer(self, now: float, delay: float) -> tuple[SigningKey, float]:
        """The key that signs at ``now``, and until when that choice holds (the moment the
        next key becomes old enough; ``inf`` when none will)."""
        chosen = self.keys[0]
        until = float("inf")
        for key in self.keys:
            ready_at = key.written_at + delay
            if ready_at <= now:
                chosen = key
            else:
                until = min(until, ready_at)
        return chosen, until

    def kids(self) -> tuple[str, ...]:
        return tuple(key.kid for key in self.keys)
