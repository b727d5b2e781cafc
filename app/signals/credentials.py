"""Bearer tokens of the signals endpoints (push, poll, the kill switch): read from their file
at each use (so a mounted secret can be rotated in place) and compared in constant time."""

from __future__ import annotations

import hmac

from app.settings.signals import Secret


class SecretUnavailable(Exception):
    """A token file could not be read (a deployment problem, answered 503)."""


def read_secret(secret: Secret) -> bytes:
    if secret.token is not None:
        return secret.token.get_secret_value().encode()
    assert secret.token_file is not None
    try:
        value = secret.token_file.read_bytes().strip()
    except OSError as exc:
        raise SecretUnavailable(f"cannot read {secret.token_file}: {exc.strerror}") from None
    if len(value) < 16:
        raise SecretUnavailable(f"{secret.token_file} holds no token of 16 characters or more")
    return value


def bearer_matches(header: str | None, expected: bytes) -> bool:
    """``Authorization: Bearer <expected>``, compared in constant time."""
    scheme, _, presented = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), expected)
