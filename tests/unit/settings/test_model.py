"""Configuration: YAML plus ZTAUTHZ_* overrides; every error names the key, file and line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from app.settings import ConfigError, load_settings
from tests.unit.settings.config_files import problems, write

GOOD = """\
server:
  check: {host: 127.0.0.1, port: 9000, path_prefix: /check}
  admin: {host: 127.0.0.1, port: 9100}
issuers:
  - issuer: https://idp.example.com
    discovery: true
    audiences: [https://api.example.com]
    algorithms: [RS256, ES256]
    max_token_lifetime: 15m
    leeway: 30s
    claims: {groups: groups, scopes: scope}
policies: ./policies
"""


def test_good_config_loads_with_durations_and_relative_policy_dir(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD))
    issuer = settings.issuers[0]
    assert issuer.max_token_lifetime == timedelta(minutes=15)
    assert issuer.leeway == timedelta(seconds=30)
    assert settings.policies == tmp_path / "policies"
    assert settings.server.check.path_prefix == "/check"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("algorithms: [RS256, ES256]", "algorithms: [RS256, HS256]", ":8: issuers[0].algorithms:"),
        ("algorithms: [RS256, ES256]", "algorithms: [none]", ":8: issuers[0].algorithms:"),
        (
            "max_token_lifetime: 15m",
            "max_token_lifetime: soon",
            ":9: issuers[0].max_token_lifetime:",
        ),
        ("leeway: 30s", "leeway: 30s\n    colour: blue", ":11: issuers[0].colour: unknown key"),
        ("port: 9000", "port: 70000", ":2: server.check.port:"),
        (
            "    audiences: [https://api.example.com]\n",
            "",
            ":5: issuers[0].audiences: required key",
        ),
        (
            "issuer: https://idp.example.com",
            "issuer: http://idp.example.com",
            ":5: issuers[0].issuer:",
        ),
        ("path_prefix: /check", "path_prefix: check/", ":2: server.check.path_prefix:"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    found = problems(tmp_path, GOOD.replace(old, new))
    assert any(p.startswith(str(tmp_path / "ztauthz.yaml")) and expected in p for p in found), found


def test_plain_http_issuer_is_accepted_on_loopback_only(tmp_path: Path) -> None:
    text = GOOD.replace("https://idp.example.com", "http://127.0.0.1:9400")
    assert load_settings(write(tmp_path, text)).issuers[0].issuer == "http://127.0.0.1:9400"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZTAUTHZ_SERVER__CHECK__PORT", "9555")
    assert load_settings(write(tmp_path, GOOD)).server.check.port == 9555


def test_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZTAUTHZ_SERVER__CHECK__PORT", "many")
    found = problems(tmp_path, GOOD)
    assert found == [
        "environment ZTAUTHZ_SERVER__CHECK__PORT: server.check.port: "
        "Input should be a valid integer, unable to parse string as an integer"
    ]


def test_duplicate_keys_and_bad_yaml_are_errors(tmp_path: Path) -> None:
    assert problems(tmp_path, GOOD + "policies: ./other\n")[0].endswith(
        ":13: duplicate key 'policies'"
    )
    assert ":2: invalid YAML" in problems(tmp_path, "a: [1,\nb: c: d\n")[0]


def test_missing_file_and_missing_issuers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(tmp_path / "nope.yaml")
    assert any("issuers: required key" in p for p in problems(tmp_path, "policies: ./p\n"))


def test_the_same_issuer_twice_is_refused(tmp_path: Path) -> None:
    block = GOOD.split("issuers:\n", 1)[1].split("policies:")[0]
    text = GOOD.replace(block, block + block)
    assert any("issuer listed more than once" in p for p in problems(tmp_path, text))


def test_jwks_uri_replaces_discovery_and_conflicts_with_it(tmp_path: Path) -> None:
    pinned = GOOD.replace("discovery: true", "jwks_uri: https://idp.example.com/keys")
    issuer = load_settings(write(tmp_path, pinned)).issuers[0]
    assert (issuer.discovery, issuer.jwks_uri) == (False, "https://idp.example.com/keys")
    both = GOOD.replace(
        "discovery: true", "discovery: true\n    jwks_uri: https://idp.example.com/k"
    )
    assert any("not both" in p for p in problems(tmp_path, both))
    neither = GOOD.replace("discovery: true", "discovery: false")
    assert any("give jwks_uri" in p for p in problems(tmp_path, neither))


@pytest.mark.parametrize(
    ("jwks", "message"),
    [
        ("{refresh_interval: 0s}", "at least 1s"),
        ("{kid_miss_min_interval: 100ms}", "at least 1s"),
        ("{refresh_interval: 1h, max_staleness: 10m}", "max_staleness must be at least"),
        ("{fetch_timeout: 0s}", "fetch_timeout must be positive"),
    ],
)
def test_jwks_timing_floors(tmp_path: Path, jwks: str, message: str) -> None:
    text = GOOD.replace("claims: {groups: groups, scopes: scope}", f"jwks: {jwks}")
    assert any(":11: issuers[0].jwks:" in p and message in p for p in problems(tmp_path, text))


@pytest.mark.parametrize(
    "realm", ['"api\\r\\nx-injected: yes"', "'a\"b'", "'a\\\\b'", "''", '"tab\\there"']
)
def test_a_realm_that_could_break_the_challenge_is_refused(tmp_path: Path, realm: str) -> None:
    """The realm is written into WWW-Authenticate unencoded (realm="..."): CR, LF, quotes,
    backslashes and control characters are refused where they are configured."""
    found = problems(tmp_path, GOOD + f"response: {{realm: {realm}}}\n")
    assert any(":13: response.realm:" in p for p in found), found


def test_a_plain_realm_is_accepted(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GOOD + "response: {realm: Example API v2}\n"))
    assert settings.response.realm == "Example API v2"
