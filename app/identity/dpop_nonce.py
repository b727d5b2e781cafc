"""Server-provided DPoP nonces (RFC 9449 §8, §9), stateless across replicas.

A nonce is ``base64url(window || HMAC-SHA256(secret, "ztauthz-dpop-nonce" || window)[:16])``
where ``window`` is ``floor(now / window_seconds)`` as 8 big-endian bytes. Every replica holding
the same secret (a file each one reads) issues the same nonce in the same window and accepts
the nonces of the current and the previous window: no shared state, no round trip, and a nonce
lives between one and two windows. Nonces are unpredictable without the secret (§8: "Nonce
values MUST be unpredictable") and bound to this deployment (another secret, another nonce).
A nonce's characters are base64url, all within the ``NQCHAR`` set §8 allows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from pathlib import Path

from app.settings import ConfigError

MIN_SECRET_BYTES = 32
_LABEL = b"ztauthz-dpop-nonce"
_MAC_BYTES = 16


class NonceIssuer:
    def __init__(self, secret: bytes, window: float) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the nonce secret must hold at least {MIN_SECRET_BYTES} bytes")
        if not window > 0:
            raise ValueError("the nonce window must be positive")
        self._secret = secret
        self._window = window

    @classmethod
    def from_file(cls, path: Path, window: float) -> NonceIssuer:
        try:
            secret = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(
                [f"dpop.nonce.secret_file: cannot read {path}: {exc.strerror}"]
            ) from None
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(
                [f"dpop.nonce.secret_file: {path} must hold at least {MIN_SECRET_BYTES} bytes"]
            )
        return cls(secret, window)

    def _nonce(self, counter: int) -> str:
        raw = counter.to_bytes(8, "big")
        mac = hmac.new(self._secret, _LABEL + raw, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(raw + mac).rstrip(b"=").decode("ascii")

    def _counter(self, now: float) -> int:
        return max(0, math.floor(now / self._window))

    def current(self, now: float) -> str:
        """The nonce to hand out at ``now`` (the ``DPoP-Nonce`` header)."""
        return self._nonce(self._counter(now))

    def accepts(self, nonce: str, now: float) -> bool:
        """Was ``nonce`` issued, by any replica with this secret, in this window or the last?"""
        if len(nonce) != 32 or not nonce.isascii():
            return False
        try:
            raw = base64.urlsafe_b64decode(nonce + "==")
        except (binascii.Error, ValueError):
            return False
        counter = int.from_bytes(raw[:8], "big")
        current = self._counter(now)
        if counter not in (current, current - 1):
            return False
        return hmac.compare_digest(self._nonce(counter), nonce)
