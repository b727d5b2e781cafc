from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import jwt
import pytest

from app.dev.cli import add_dev_commands
from app.dev.keys import DevKeys
from tests.unit.dev.dev_helpers import DEV_CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ztauthz")
    add_dev_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(["dev", *argv])
    code: int = args.func(args)
    return code


def _verify(keys_dir: Path, token: str, audience: str | list[str]) -> dict[str, Any]:
    jwk_set = jwt.PyJWKSet.from_dict(DevKeys.load_or_create(keys_dir).jwks())
    key = jwk_set[jwt.get_unverified_header(token)["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256", "ES256"],
        audience=audience,
        issuer="http://127.0.0.1:9400",
        options={"require": []},
    )
    return claims


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_dev_token_process_prints_only_a_verifiable_token(tmp_path: Path, alg: str) -> None:
    keys_dir = tmp_path / "keys"
    argv = [
        *["token", "--keys", str(keys_dir), "--aud", "ztauthz-demo", "--sub", "carol"],
        *["--group", "finance", "--group", "staff", "--scope", "invoices:read"],
        *["--alg", alg, "--ttl", "5m", "--claim", 'amr=["mfa"]', "--claim", "acr=loa2"],
        *["--claim", "level=3", "--drop-claim", "jti"],
    ]
    done = subprocess.run(
        [*DEV_CLI, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # Which keys and issuer the token is for, on stderr: stdout stays the token alone.
    assert done.stderr.splitlines() == [
        f"ztauthz dev token: iss http://127.0.0.1:9400, signed with the keys in {keys_dir}",
        f"ztauthz dev token: created new keys in {keys_dir}: only an issuer started after "
        "this trusts them (a running stack with other keys answers 401)",
        f"ztauthz dev token: no dev stack is running on {tmp_path}",
    ]
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    claims = _verify(keys_dir, lines[0], "ztauthz-demo")
    assert jwt.get_unverified_header(lines[0])["alg"] == alg
    assert claims["sub"] == "carol"
    assert claims["groups"] == ["finance", "staff"]
    assert claims["scope"] == "invoices:read"
    assert claims["exp"] - claims["iat"] == 300
    assert (claims["amr"], claims["acr"], claims["level"]) == (["mfa"], "loa2", 3)
    assert "jti" not in claims


def test_dev_token_defaults_and_repeated_audience(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys_dir = tmp_path / "keys"
    code = _run(["token", "--keys", str(keys_dir), "--aud", "a", "--aud", "b"])
    token = capsys.readouterr().out.strip()
    assert code == 0
    claims = _verify(keys_dir, token, "b")
    assert (claims["sub"], claims["aud"], claims["exp"] - claims["iat"]) == (
        "alice",
        ["a", "b"],
        300,
    )
    assert "groups" not in claims
    assert "scope" not in claims


@pytest.mark.parametrize(
    "argv",
    [
        ["token"],  # --aud is required
        ["token", "--aud", "a", "--ttl", "5x"],
        ["token", "--aud", "a", "--ttl", "-5m"],
        ["token", "--aud", "a", "--claim", "no-equals-sign"],
        ["token", "--aud", "a", "--claim", "=value"],
        ["token", "--aud", "a", "--alg", "HS256"],
        ["token", "--aud", "a", "--alg", "none"],
        ["issuer", "--port", "not-a-port"],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["dev", *argv])
    assert info.value.code == 2
    assert capsys.readouterr().out == ""


def test_dev_token_refuses_keys_others_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys_dir = tmp_path / "keys"
    DevKeys.load_or_create(keys_dir)
    (keys_dir / "rs256.pem").chmod(0o644)
    code = _run(["token", "--keys", str(keys_dir), "--aud", "a"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert "chmod 600" in err


def test_dev_stack_delegates_every_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []
    fake = types.ModuleType("app.dev.demo")

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, default=10000)
        parser.add_argument("--keep", action="store_true")

    def run(args: argparse.Namespace) -> int:
        seen.append(args)
        return 7

    fake.add_arguments = add_arguments  # type: ignore[attr-defined]
    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "app.dev.demo", fake)
    assert _run(["stack", "--port", "18000", "--keep"]) == 7
    assert (seen[0].port, seen[0].keep) == (18000, True)
    with pytest.raises(SystemExit) as info:  # the stack's own parser answers --help
        _run(["stack", "--help"])
    assert info.value.code == 0


def test_dev_stack_explains_when_unavailable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "app.dev.demo", None)  # makes the import fail
    assert _run(["stack"]) == 2
    assert "app.dev.demo is missing" in capsys.readouterr().err


def test_building_the_parser_imports_no_dev_machinery() -> None:
    probe = (
        "import argparse, json, sys\n"
        "from app.dev.cli import add_dev_commands\n"
        "add_dev_commands(argparse.ArgumentParser().add_subparsers())\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout))
    heavy = {"app.dev.keys", "app.dev.issuer", "app.dev.demo", "jwt", "uvicorn", "cryptography"}
    assert not heavy & loaded
    assert "app.dev.cli" in loaded
