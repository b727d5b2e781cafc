"""Introspection configuration and credentials: secrets only from files or the environment,
errors that name the key and never the secret, and Authlib's deprecation handled deliberately."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwk

from app.identity.introspection_client import load_credentials
from app.policy.loader import load_policy_dir
from app.settings import ConfigError, load_settings
from app.settings.introspection import Introspection

ISSUER_YAML = """\
issuers:
  - issuer: https://idp.example.com
    audiences: [api]
    introspection:
{introspection}
"""


def config(tmp_path: Path, introspection: str, more: str = "") -> Path:
    body = "\n".join("      " + line for line in introspection.strip().splitlines())
    path = tmp_path / "ztauthz.yaml"
    path.write_text(ISSUER_YAML.format(introspection=body) + more)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return info.value.problems


BASIC = "client_id: ztauthz\nauth: client_secret_basic\nclient_secret_file: secret.txt"


def test_a_relative_secret_file_is_found_beside_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("  s3cret\n")
    settings = load_settings(config(tmp_path, BASIC))
    introspection = settings.issuers[0].introspection
    assert introspection is not None
    assert introspection.client_secret_file == tmp_path / "secret.txt"
    credentials = load_credentials("issuers[0].introspection", introspection)
    assert credentials.secret == "s3cret"
    assert "s3cret" not in repr(credentials)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("client_id: z\nauth: client_secret_basic\nclient_secret: hunter2", "never written into"),
        ("client_id: z\nauth: client_secret_basic", "exactly one of"),
        (
            "client_id: z\nauth: client_secret_basic\nclient_secret_env: A\nclient_secret_file: b",
            "exactly one of",
        ),
        ("client_id: z\nauth: private_key_jwt", "needs private_key_file"),
        (
            "client_id: z\nauth: private_key_jwt\nprivate_key_file: k\nsigning_alg: HS256",
            "signing_alg",
        ),
        (
            "client_id: z\nauth: private_key_jwt\nprivate_key_file: k\nsigning_alg: EdDSA",
            "RFC 9864",
        ),
        ("client_id: z\nauth: client_secret_post\nclient_secret_env: A", "auth"),
        (BASIC + "\ncache_ttl: 10m", "cache_ttl must be at most"),
        (BASIC + "\nhigh_risk_max_age: 1m", "high_risk_max_age"),
        (BASIC + "\ntimeout: 0s", "timeout"),
        (BASIC + "\nendpoint: http://idp.example.com/introspect", "https"),
        (BASIC + "\nopaque_tokens: false", "opaque_tokens or high_risk_jwts"),
    ],
)
def test_bad_introspection_settings_name_key_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    [problem] = problems(config(tmp_path, text))
    assert "issuers[0].introspection" in problem and "ztauthz.yaml:" in problem
    assert message in problem
    assert "hunter2" not in problem


def test_two_issuers_may_not_both_take_opaque_tokens(tmp_path: Path) -> None:
    second = (
        "  - issuer: https://other.example.com\n    audiences: [api]\n    introspection:\n"
        "      client_id: z\n      auth: client_secret_basic\n      client_secret_env: B\n"
    )
    [problem] = problems(config(tmp_path, BASIC, second))
    assert "at most one issuer may accept opaque tokens" in problem


def test_without_discovery_the_endpoint_must_be_given(tmp_path: Path) -> None:
    path = tmp_path / "ztauthz.yaml"
    path.write_text(
        "issuers:\n  - issuer: https://idp.example.com\n    audiences: [api]\n"
        "    jwks_uri: https://idp.example.com/jwks\n    introspection:\n"
        "      client_id: z\n      auth: client_secret_basic\n      client_secret_env: A\n"
    )
    [problem] = problems(path)
    assert "introspection.endpoint is required when discovery is off" in problem


def settings_for(**values: object) -> Introspection:
    base: dict[str, object] = {"client_id": "z", "auth": "client_secret_basic"}
    base.update(values)
    return Introspection.model_validate(base)


def test_the_secret_comes_from_the_environment() -> None:
    settings = settings_for(client_secret_env="ZT_SECRET")
    assert load_credentials("x", settings, {"ZT_SECRET": "abc\n"}).secret == "abc"
    with pytest.raises(ConfigError) as missing:
        load_credentials("issuers[0].introspection", settings, {})
    assert missing.value.problems == [
        "issuers[0].introspection.client_secret_env: environment variable ZT_SECRET is empty or unset"
    ]


def test_an_unreadable_or_empty_secret_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"x.client_secret_file: cannot read .*nope"):
        load_credentials("x", settings_for(client_secret_file=tmp_path / "nope"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_credentials("x", settings_for(client_secret_file=tmp_path / "empty"))


def rsa_pem(bits: int) -> str:
    """An RSA private key of any size as PEM (joserfc warns about one below 2048 bits)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def jwk_text(key: jwk.ECKey) -> str:
    return json.dumps(key.as_dict(private=True))


def key_settings(path: Path, alg: str) -> Introspection:
    return Introspection.model_validate(
        {"client_id": "z", "auth": "private_key_jwt", "private_key_file": path, "signing_alg": alg}
    )


@pytest.mark.parametrize("form", ["pem", "jwk"])
def test_a_private_key_loads_from_pem_or_jwk(tmp_path: Path, form: str) -> None:
    key = jwk.ECKey.generate_key("P-256")
    path = tmp_path / "key"
    path.write_text(
        key.as_pem(private=True).decode()
        if form == "pem"
        else json.dumps(key.as_dict(private=True))
    )
    loaded = load_credentials("x", key_settings(path, "ES256")).key
    assert loaded is not None and loaded.thumbprint() == key.thumbprint()


@pytest.mark.parametrize(
    ("text", "alg", "message"),
    [
        (jwk_text(jwk.ECKey.generate_key("P-256")), "RS256", "is not a RSA key"),
        (jwk_text(jwk.ECKey.generate_key("P-384")), "ES256", "curve does not suit ES256"),
        (rsa_pem(1024), "RS256", "at least 2048 bits"),
        (
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
            "RS256",
            "not a RSA",
        ),
    ],
    ids=["wrong-type", "wrong-curve", "short-rsa", "garbage"],
)
def test_a_key_that_cannot_sign_is_refused_at_start(
    tmp_path: Path, text: str, alg: str, message: str
) -> None:
    path = tmp_path / "key"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_credentials("x", key_settings(path, alg))
    assert message in str(refused.value)
    assert text[30:60] not in str(refused.value)  # no key material in the message


def test_a_public_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(json.dumps(jwk.ECKey.generate_key("P-256").as_dict(private=False)))
    with pytest.raises(ConfigError, match="public key"):
        load_credentials("x", key_settings(path, "ES256"))


def test_importing_the_client_raises_no_warning_even_as_errors() -> None:
    """Authlib's httpx deprecation is silenced at the one import, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import app.identity.introspection_client"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_other_authlib_deprecations_still_surface() -> None:
    """The silencing is narrow, and Authlib's global 'always' filter was not left behind:
    under pytest's warnings-as-errors any other Authlib deprecation is an error."""
    from authlib.deprecate import AuthlibDeprecationWarning, deprecate

    import app.identity.introspection_client  # noqa: F401 - already imported; the point

    assert not any(f[2] is AuthlibDeprecationWarning and f[0] == "always" for f in warnings.filters)
    with pytest.raises(AuthlibDeprecationWarning):
        deprecate("some other deprecation")


def test_the_documented_examples_are_valid(tmp_path: Path) -> None:
    """docs/introspection.md's configuration and policy examples load as they are."""
    text = (Path(__file__).resolve().parents[3] / "docs" / "introspection.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    config, policy = blocks
    (tmp_path / "policies").mkdir()
    (tmp_path / "ztauthz.yaml").write_text(config)
    settings = load_settings(tmp_path / "ztauthz.yaml")
    assert [i.introspection is not None for i in settings.issuers] == [True, True]
    (tmp_path / "policies" / "payments.yaml").write_text(policy)
    assert load_policy_dir(tmp_path / "policies").high_risk == {"payout"}
