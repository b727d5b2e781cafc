from __future__ import annotations

import base64
import re
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.dev.keys import EC_FILE, RSA_FILE, DevKeyError, DevKeys, thumbprint
from tests.unit.dev.dev_helpers import shared_keys

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture
def dev_keys() -> DevKeys:
    return shared_keys()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _weak_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (refused)


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def test_creates_private_files_in_private_directory(tmp_path: Path) -> None:
    directory = tmp_path / "nested" / "keys"
    DevKeys.load_or_create(directory)
    assert _mode(directory) == 0o700
    assert sorted(p.name for p in directory.iterdir()) == sorted([RSA_FILE, EC_FILE])
    for name in (RSA_FILE, EC_FILE):
        assert _mode(directory / name) == 0o600


def test_reload_gives_the_same_keys(tmp_path: Path) -> None:
    first = DevKeys.load_or_create(tmp_path / "keys")
    second = DevKeys.load_or_create(tmp_path / "keys")
    assert (second.rsa_kid, second.ec_kid) == (first.rsa_kid, first.ec_kid)
    assert second.jwks() == first.jwks()
    assert second.rsa_key.private_numbers() == first.rsa_key.private_numbers()
    assert second.ec_key.private_numbers() == first.ec_key.private_numbers()


def test_separate_directories_hold_separate_keys(tmp_path: Path) -> None:
    one = DevKeys.load_or_create(tmp_path / "one")
    two = DevKeys.load_or_create(tmp_path / "two")
    assert one.rsa_kid != two.rsa_kid
    assert one.ec_kid != two.ec_kid


def test_missing_file_is_recreated_and_the_other_kept(tmp_path: Path) -> None:
    first = DevKeys.load_or_create(tmp_path / "keys")
    (tmp_path / "keys" / EC_FILE).unlink()
    second = DevKeys.load_or_create(tmp_path / "keys")
    assert second.rsa_kid == first.rsa_kid
    assert second.ec_kid != first.ec_kid


def test_existing_open_directory_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    directory.chmod(0o755)
    DevKeys.load_or_create(directory)
    assert _mode(directory) == 0o700


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_refuses_key_file_others_can_read(tmp_path: Path, mode: int) -> None:
    DevKeys.load_or_create(tmp_path / "keys")
    path = tmp_path / "keys" / RSA_FILE
    path.chmod(mode)
    with pytest.raises(DevKeyError, match="chmod 600") as info:
        DevKeys.load_or_create(tmp_path / "keys")
    assert "PRIVATE KEY" not in str(info.value)


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        (RSA_FILE, lambda: b"not a pem"),
        (RSA_FILE, lambda: _pem(ec.generate_private_key(ec.SECP256R1()))),
        (RSA_FILE, lambda: _pem(_weak_rsa())),
        (EC_FILE, lambda: _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))),
        (EC_FILE, lambda: _pem(ec.generate_private_key(ec.SECP384R1()))),
    ],
    ids=["garbage", "ec-as-rsa", "rsa-1024", "rsa-as-ec", "p384-as-es256"],
)
def test_refuses_unusable_key_files(
    tmp_path: Path, filename: str, content: Callable[[], bytes]
) -> None:
    directory = tmp_path / "keys"
    DevKeys.load_or_create(directory)
    _write_private(directory / filename, content())
    with pytest.raises(DevKeyError):
        DevKeys.load_or_create(directory)


def test_concurrent_creation_agrees_on_one_key_pair(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: DevKeys.load_or_create(directory), range(4)))
    assert {r.rsa_kid for r in results} == {results[0].rsa_kid}
    assert {r.ec_kid for r in results} == {results[0].ec_kid}
    assert sorted(p.name for p in directory.iterdir()) == sorted([RSA_FILE, EC_FILE])


def test_jwks_holds_public_members_only(dev_keys: DevKeys) -> None:
    keys = dev_keys.jwks()["keys"]
    assert [k["alg"] for k in keys] == ["RS256", "ES256"]
    for jwk in keys:
        assert not PRIVATE_MEMBERS & set(jwk), jwk
        assert jwk["use"] == "sig"
    assert set(keys[0]) == {"kty", "n", "e", "kid", "alg", "use"}
    assert set(keys[1]) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (keys[0]["kty"], keys[1]["kty"], keys[1]["crv"]) == ("RSA", "EC", "P-256")


def test_jwks_keys_are_the_public_halves(dev_keys: DevKeys) -> None:
    jwk_set = jwt.PyJWKSet.from_dict(dev_keys.jwks())
    rsa_public = jwk_set[dev_keys.rsa_kid].key
    ec_public = jwk_set[dev_keys.ec_kid].key
    assert rsa_public.public_numbers() == dev_keys.rsa_key.public_key().public_numbers()
    assert ec_public.public_numbers() == dev_keys.ec_key.public_key().public_numbers()


@pytest.mark.parametrize(("alg", "prefix"), [("RS256", "dev-rs256-"), ("ES256", "dev-es256-")])
def test_kid_comes_from_the_thumbprint(dev_keys: DevKeys, alg: str, prefix: str) -> None:
    jwk = dev_keys.public_jwk(alg)
    assert re.fullmatch(re.escape(prefix) + "[0-9a-f]{8}", jwk["kid"])
    digest = base64.urlsafe_b64decode(thumbprint(jwk) + "=")
    assert jwk["kid"] == prefix + digest.hex()[:8]


def test_thumbprint_matches_rfc7638_example() -> None:
    # RFC 7638 section 3.1; members beyond the required ones do not count.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
        "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65Y"
        "GjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdk"
        "t-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_rejects_unknown_key_type() -> None:
    with pytest.raises(ValueError, match="oct"):
        thumbprint({"kty": "oct", "k": "c2VjcmV0"})


def test_private_key_for_each_algorithm(dev_keys: DevKeys) -> None:
    kid, key = dev_keys.private_key_for("RS256")
    assert (kid, key) == (dev_keys.rsa_kid, dev_keys.rsa_key)
    kid, key = dev_keys.private_key_for("ES256")
    assert (kid, key) == (dev_keys.ec_kid, dev_keys.ec_key)


@pytest.mark.parametrize("alg", ["HS256", "none", "PS256", "ES384", "rs256", ""])
def test_private_key_for_refuses_other_algorithms(dev_keys: DevKeys, alg: str) -> None:
    with pytest.raises(ValueError, match="unsupported dev algorithm"):
        dev_keys.private_key_for(alg)
    with pytest.raises(ValueError, match="unsupported dev algorithm"):
        dev_keys.public_jwk(alg)


def test_repr_shows_no_key_material(dev_keys: DevKeys) -> None:
    text = repr(dev_keys)
    assert dev_keys.rsa_kid in text
    assert "PrivateKey" not in text
