from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from app.dev.issuer import check_issuer_url, create_issuer_app
from app.dev.keys import DevKeys
from app.dev.tokens import mint
from tests.unit.dev.dev_helpers import DEV_CLI, running, serving, shared_keys

REQUIRED_METADATA = {
    "issuer",
    "jwks_uri",
    "id_token_signing_alg_values_supported",
    "response_types_supported",
    "subject_types_supported",
}
AUDIENCE = "ztauthz-demo"
KEYS = shared_keys()


def test_discovery_and_jwks_over_http() -> None:
    with serving(lambda url: create_issuer_app(KEYS, url)) as base:
        discovery = httpx.get(f"{base}/.well-known/openid-configuration")
        assert discovery.status_code == 200
        document = discovery.json()
        jwks = httpx.get(document["jwks_uri"])
    assert set(document) >= REQUIRED_METADATA
    assert document["issuer"] == base
    assert document["jwks_uri"] == f"{base}/jwks.json"
    assert document["id_token_signing_alg_values_supported"] == ["RS256", "ES256"]
    assert jwks.status_code == 200
    assert jwks.headers["content-type"].startswith("application/jwk-set+json")
    assert jwks.json() == KEYS.jwks()


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_minted_tokens_verify_through_discovery(alg: str) -> None:
    with serving(lambda url: create_issuer_app(KEYS, url)) as base:
        document = httpx.get(f"{base}/.well-known/openid-configuration").json()
        token = mint(KEYS, issuer=document["issuer"], audience=AUDIENCE, subject="alice", alg=alg)
        client = jwt.PyJWKClient(document["jwks_uri"], cache_keys=False)
        signing_key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token, signing_key, algorithms=[alg], audience=AUDIENCE, issuer=document["issuer"]
    )
    assert claims["sub"] == "alice"


def test_issuer_with_path_serves_under_it() -> None:
    with serving(lambda url: create_issuer_app(KEYS, url + "/realms/dev")) as base:
        document = httpx.get(f"{base}/realms/dev/.well-known/openid-configuration").json()
        jwks = httpx.get(document["jwks_uri"]).json()
        at_root = httpx.get(f"{base}/.well-known/openid-configuration").status_code
    assert document["issuer"] == f"{base}/realms/dev"
    assert document["jwks_uri"] == f"{base}/realms/dev/jwks.json"
    assert jwks == KEYS.jwks()
    assert at_root == 404


def test_nothing_else_is_served() -> None:
    cases = [
        ("GET", "/token", 404),
        ("POST", "/token", 404),
        ("POST", "/jwks.json", 405),
        ("DELETE", "/.well-known/openid-configuration", 405),
        ("GET", "/", 404),
        ("HEAD", "/jwks.json", 200),
    ]
    with serving(lambda url: create_issuer_app(KEYS, url)) as base:
        got = [(m, p, httpx.request(m, base + p).status_code) for m, p, _ in cases]
    assert got == cases


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/",
        "127.0.0.1:9400",
        "http://",
        "http://127.0.0.1:9400/?x=1",
        "http://127.0.0.1:9400/#frag",
    ],
)
def test_refuses_invalid_issuer_urls(url: str) -> None:
    with pytest.raises(ValueError, match="issuer URL"):
        check_issuer_url(url)
    with pytest.raises(ValueError, match="issuer URL"):
        create_issuer_app(KEYS, url)


def test_dev_issuer_command_serves_the_shared_keys(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    argv = [*DEV_CLI, "issuer", "--port", "0", "--keys", str(keys_dir)]
    with running(argv, tmp_path) as issuer:
        document: dict[str, Any] = httpx.get(
            f"{issuer.url}/.well-known/openid-configuration"
        ).json()
        jwks = httpx.get(document["jwks_uri"]).json()
        code, err = issuer.stop()
    assert issuer.url.startswith("http://127.0.0.1:")
    assert document["issuer"] == issuer.url
    assert jwks == DevKeys.load_or_create(keys_dir).jwks()
    assert code == 0
    assert "DEVELOPMENT ONLY" in err


def test_dev_issuer_command_takes_an_issuer_url(tmp_path: Path) -> None:
    argv = [*DEV_CLI, "issuer", "--port", "0", "--keys", str(tmp_path / "keys")]
    with running([*argv, "--issuer-url", "https://idp.example.test/dev"], tmp_path) as issuer:
        assert issuer.url == "https://idp.example.test/dev"


def test_dev_issuer_command_refuses_a_bad_issuer_url(tmp_path: Path) -> None:
    argv = [*DEV_CLI, "issuer", "--port", "0", "--keys", str(tmp_path / "keys")]
    done = subprocess.run(
        [*argv, "--issuer-url", "http://x/?q=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "issuer URL" in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "keys").exists()  # refused before touching anything
