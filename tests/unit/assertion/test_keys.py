"""The assertion's signing keys: files, kids, algorithms, the JWKS, and which key signs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from app.assertion.keys import KeyFileError, KeyRing, kid_of, load_key, load_keys
from tests.unit.assertion.assertion_support import NOW, pem, private_key, write_key


@pytest.mark.parametrize(
    ("kind", "algorithm", "kty"),
    [("ec", "ES256", "EC"), ("ed25519", "EdDSA", "OKP"), ("rsa", "RS256", "RSA")],
)
def test_the_key_type_decides_the_algorithm(
    tmp_path: Path, kind: str, algorithm: str, kty: str
) -> None:
    key = load_key(write_key(tmp_path, "2025-06-01.pem", kind))  # type: ignore[arg-type]
    assert key.kid == "2025-06-01"
    assert key.algorithm == algorithm
    assert key.public_jwk["kty"] == kty
    assert key.public_jwk["kid"] == "2025-06-01"
    assert key.public_jwk["alg"] == algorithm
    assert key.public_jwk["use"] == "sig"
    assert "key_ops" not in key.public_jwk  # RFC 7517 §4.3: "use" or "key_ops", not both


def test_the_jwks_publishes_public_members_only(tmp_path: Path) -> None:
    for name, kind in (("a.pem", "ec"), ("b.pem", "ed25519"), ("c.pem", "rsa")):
        write_key(tmp_path, name, kind)  # type: ignore[arg-type]
    ring = KeyRing.of(load_keys(tmp_path))
    published = json.loads(ring.jwks)["keys"]
    assert [jwk["kid"] for jwk in published] == ["a", "b", "c"]
    private_members = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
    for jwk in published:
        assert not private_members & set(jwk), jwk["kid"]


def test_the_etag_follows_the_published_keys(tmp_path: Path) -> None:
    write_key(tmp_path, "a.pem")
    first = KeyRing.of(load_keys(tmp_path))
    assert first.etag == KeyRing.of(load_keys(tmp_path)).etag  # same keys, same validator
    assert first.etag.startswith('"') and first.etag.endswith('"')
    write_key(tmp_path, "b.pem")
    assert KeyRing.of(load_keys(tmp_path)).etag != first.etag


@pytest.mark.parametrize(
    ("name", "kid"),
    [("2025-06-01.pem", "2025-06-01"), ("k1.key", "k1"), ("current", "current"), ("a.b", "a.b")],
)
def test_kid_is_the_file_name_without_its_extension(name: str, kid: str) -> None:
    assert kid_of(Path("/keys") / name) == kid


def _encrypted() -> bytes:
    return private_key("ec").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


def _public() -> bytes:
    return (
        private_key("ec")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (lambda: b"not a key\n", "not a PEM private key"),
        (lambda: b"", "not a PEM private key"),
        (_public, "not a PEM private key"),
        (_encrypted, "encrypted"),
        (lambda: pem(ec.generate_private_key(ec.SECP384R1())), "secp384r1 is not supported"),
        (lambda: pem(rsa.generate_private_key(65537, 1024)), "RSA key of 1024 bits"),  # noqa: S505
        (lambda: pem(dsa.generate_private_key(2048)), "DSAPrivateKey keys are not supported"),
        (lambda: b"x" * (64 * 1024 + 1), "larger than"),
    ],
    ids=["text", "empty", "public", "encrypted", "p384", "rsa1024", "dsa", "huge"],
)
def test_a_key_that_cannot_sign_is_refused_naming_its_file(
    tmp_path: Path, content: object, problem: str
) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content())  # type: ignore[operator]
    with pytest.raises(KeyFileError) as caught:
        load_keys(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "\n" not in message


def test_directory_problems_name_the_entry(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such file or directory"):
        load_keys(tmp_path / "missing")
    with pytest.raises(KeyFileError, match="holds no key file"):
        load_keys(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(KeyFileError, match=r"/sub: not a regular file"):
        load_keys(tmp_path)


def test_two_files_with_one_kid_are_refused(tmp_path: Path) -> None:
    write_key(tmp_path, "k1.pem")
    write_key(tmp_path, "k1.key")
    with pytest.raises(KeyFileError, match="kid 'k1' again"):
        load_keys(tmp_path)


def test_a_file_name_that_is_no_kid_is_refused(tmp_path: Path) -> None:
    write_key(tmp_path, "my key.pem")
    with pytest.raises(KeyFileError, match=r"my key\.pem: the file name"):
        load_keys(tmp_path)


def test_a_kubernetes_secret_directory_is_read_through_its_links(tmp_path: Path) -> None:
    # What the kubelet mounts: the data in a hidden timestamped directory, ..data linking to it,
    # and one visible link per key.
    data = tmp_path / "..2025_06_01_12_00_00.000"
    write_key(data, "2025-06-01.pem")
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "2025-06-01.pem").symlink_to("..data/2025-06-01.pem")
    keys = load_keys(tmp_path)
    assert [key.kid for key in keys] == ["2025-06-01"]


def test_one_file_is_a_key_set_of_one(tmp_path: Path) -> None:
    path = write_key(tmp_path, "only.pem")
    write_key(tmp_path, "ignored.pem")
    assert [key.kid for key in load_keys(path)] == ["only"]


def test_keys_are_ordered_by_when_written_then_by_kid(tmp_path: Path) -> None:
    write_key(tmp_path, "zzz.pem", written_at=NOW - 300)
    write_key(tmp_path, "bbb.pem", written_at=NOW - 100)
    write_key(tmp_path, "aaa.pem", written_at=NOW - 100)
    assert [key.kid for key in load_keys(tmp_path)] == ["zzz", "aaa", "bbb"]


def _ring(tmp_path: Path, written: dict[str, float]) -> KeyRing:
    for name, when in written.items():
        write_key(tmp_path, f"{name}.pem", written_at=when)
    return KeyRing.of(load_keys(tmp_path))


@pytest.mark.parametrize(
    ("written", "delay", "signer", "until"),
    [
        # Without a delay the newest key signs at once.
        ({"old": NOW - 1000, "new": NOW - 10}, 0, "new", float("inf")),
        # With one, the new key waits until it has been published that long.
        ({"old": NOW - 1000, "new": NOW - 10}, 300, "old", NOW + 290),
        ({"old": NOW - 1000, "new": NOW - 300}, 300, "new", float("inf")),
        # No key is that old yet (a first deployment): the oldest signs until one is.
        ({"a": NOW - 10, "b": NOW - 5}, 300, "a", NOW + 290),
        # Written together (a Kubernetes secret update): the greatest kid is the newest.
        ({"2025-01": NOW - 1000, "2025-06": NOW - 1000}, 300, "2025-06", float("inf")),
    ],
    # Ids of their own: the values hold the clock, and every pytest-xdist worker must collect
    # the same test names.
    ids=["no-delay", "new-too-recent", "new-old-enough", "none-old-enough", "written-together"],
)
def test_the_newest_key_published_long_enough_signs(
    tmp_path: Path, written: dict[str, float], delay: float, signer: str, until: float
) -> None:
    chosen, holds_until = _ring(tmp_path, written).signer(NOW, delay)
    assert chosen.kid == signer
    assert holds_until == until
