"""Server nonces (RFC 9449 §9) from a shared secret: the same on every replica, accepted for
their window and the next, unpredictable without the secret, and a missing or short secret
file stops the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.identity.dpop_nonce import NonceIssuer
from app.settings import ConfigError

SECRET = b"s" * 32


def test_replicas_with_one_secret_issue_and_accept_the_same_nonces() -> None:
    first, second = NonceIssuer(SECRET, 300.0), NonceIssuer(SECRET, 300.0)
    assert first.current(1_000_000.0) == second.current(1_000_000.0)
    assert second.accepts(first.current(1_000_000.0), 1_000_000.0)


def test_a_nonce_lives_its_window_and_the_next() -> None:
    issuer = NonceIssuer(SECRET, 300.0)
    start = 300.0 * 4000  # a window boundary
    nonce = issuer.current(start)
    assert issuer.current(start + 299.9) == nonce
    assert issuer.accepts(nonce, start + 599.9)
    assert not issuer.accepts(nonce, start + 600.0)
    assert not issuer.accepts(issuer.current(start + 300.0), start)  # not from the future


def test_another_secret_or_a_tampered_nonce_is_refused() -> None:
    issuer = NonceIssuer(SECRET, 300.0)
    foreign = NonceIssuer(b"t" * 32, 300.0).current(1_000_000.0)
    assert not issuer.accepts(foreign, 1_000_000.0)
    nonce = issuer.current(1_000_000.0)
    tampered = nonce[:-1] + ("A" if nonce[-1] != "A" else "B")
    assert not issuer.accepts(tampered, 1_000_000.0)


def test_nonces_use_only_characters_rfc_9449_allows() -> None:
    nonce = NonceIssuer(SECRET, 300.0).current(1_000_000.0)
    # NQCHAR = %x21 / %x23-5B / %x5D-7E (RFC 9449 §8)
    assert all(c == "!" or "#" <= c <= "[" or "]" <= c <= "~" for c in nonce)


def test_the_secret_file_must_exist_and_be_long_enough(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        NonceIssuer.from_file(tmp_path / "absent", 300.0)
    short = tmp_path / "short"
    short.write_bytes(b"too short\n")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        NonceIssuer.from_file(short, 300.0)
    good = tmp_path / "good"
    good.write_bytes(SECRET + b"\n")
    assert NonceIssuer.from_file(good, 300.0).current(1.0) == NonceIssuer(SECRET, 300.0).current(
        1.0
    )
