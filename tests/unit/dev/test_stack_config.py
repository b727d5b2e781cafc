"""Dev tooling for evidence: identity tokens with device and location claims, device attestation
tokens from a dev device provider (CLI and library), and the stack's configuration binding."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import jwt
import pytest

from app.dev.cli import add_dev_commands
from app.dev.keys import DevKeys
from app.dev.stack_config import Ports, bind_config, demo_config
from app.dev.tokens import identity_device_claims, mint, mint_device_token
from app.settings import Settings


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ztauthz")
    add_dev_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dev", *argv])
    code: int = args.func(args)
    return code


def verified(keys: DevKeys, token: str, issuer: str, audience: str) -> dict[str, Any]:
    key = jwt.PyJWKSet.from_dict(keys.jwks())[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["ES256", "RS256"], audience=audience, issuer=issuer
    )
    return claims


def test_device_token_library(tmp_path: Path) -> None:
    keys = DevKeys.load_or_create(tmp_path / "device-keys")
    token = mint_device_token(
        keys,
        issuer="http://127.0.0.1:9401",
        audience="api",
        device_id="laptop-1",
        managed=False,
        risk_score=None,
        country="DE",
        now=1_800_000_000,
        ttl=60,
    )
    assert jwt.get_unverified_header(token)["typ"] == "JWT"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "laptop-1" and claims["managed"] is False
    assert "risk_score" not in claims
    assert claims["os"] == {"name": "macOS", "version": "14.4.1"}
    assert claims["posture_time"] == claims["iat"] == 1_800_000_000
    assert claims["exp"] == 1_800_000_060 and claims["country"] == "DE"


def test_identity_tokens_with_device_and_location_claims(tmp_path: Path) -> None:
    keys = DevKeys.load_or_create(tmp_path / "keys")
    extra = identity_device_claims("laptop-1", country="FR", managed=True, cnf_jkt="abc")
    token = mint(keys, issuer="http://i", audience="api", subject="alice", extra_claims=extra)
    claims = verified(keys, token, "http://i", "api")
    assert claims["device_id"] == "laptop-1" and claims["country"] == "FR"
    assert claims["device"] == {"managed": True} and claims["cnf"] == {"jkt": "abc"}
    assert identity_device_claims() == {}


def test_dev_device_token_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys_dir = tmp_path / "device-keys"
    argv = ["device-token", "--keys", str(keys_dir), "--aud", "api", "--device-id", "d9"]
    argv += ["--posture", "compliant=false", "--posture", 'os_version="15.1"']
    assert run(argv) == 0
    token = capsys.readouterr().out.strip()
    claims = verified(DevKeys.load_or_create(keys_dir), token, "http://127.0.0.1:9401", "api")
    assert (claims["sub"], claims["compliant"], claims["os"]["version"]) == ("d9", False, "15.1")
    assert run([*argv[:7], "--posture", "colour=blue"]) == 2
    assert "unknown posture claim(s) ['colour']" in capsys.readouterr().err


def test_dev_token_device_and_country(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys_dir = tmp_path / "keys"
    argv = ["token", "--keys", str(keys_dir), "--aud", "api", "--device-id", "d9"]
    assert run([*argv, "--country", "NL"]) == 0
    token = capsys.readouterr().out.strip()
    claims = verified(DevKeys.load_or_create(keys_dir), token, "http://127.0.0.1:9400", "api")
    assert (claims["device_id"], claims["country"]) == ("d9", "NL")


def test_the_demo_configuration_binds_and_validates(tmp_path: Path) -> None:
    ports = Ports(issuer=19400, device_issuer=19401)
    config = bind_config(
        demo_config(),
        ports=ports,
        issuer_url="http://127.0.0.1:19400",
        policies=tmp_path,
        device_issuer_url="http://127.0.0.1:19401",
    )
    settings = Settings.model_validate(config)
    assert settings.evidence.token_claims[0].issuer == "http://127.0.0.1:19400"
    assert settings.evidence.device_token is not None
    assert settings.evidence.device_token.provider.issuer == "http://127.0.0.1:19401"
    assert demo_config()["evidence"]["token_claims"][0]["issuer"] == "http://127.0.0.1:9400"
