"""Configuration of the signed identity assertion (``assertion:``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from app.settings import ConfigError
from tests.unit.settings.config_files import ONE_ISSUER, load

BASE = ONE_ISSUER + "policies: ./policies\n"
ON = """\
assertion:
  enabled: true
  issuer: https://ztauthz.example/invoices
  audience: https://invoices.internal
  keys: secrets/assertion
"""


def test_off_by_default(tmp_path: Path) -> None:
    assertion = load(tmp_path, BASE).assertion
    assert assertion.enabled is False
    assert assertion.header == "x-auth-assertion"
    assert assertion.lifetime == timedelta(seconds=60)
    assert assertion.signing_delay == assertion.jwks_max_age == timedelta(minutes=5)
    assert assertion.cache_size == 10_000


def test_enabled_with_keys_relative_to_the_configuration_file(tmp_path: Path) -> None:
    assertion = load(
        tmp_path, BASE + ON + "  lifetime: 2m\n  routes:\n    - {audience: b, hosts: [b.example]}\n"
    ).assertion
    assert assertion.enabled is True
    assert assertion.keys == tmp_path / "secrets" / "assertion"
    assert assertion.lifetime == timedelta(minutes=2)
    assert assertion.routes[0].audience == "b"


def test_the_environment_can_turn_it_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZTAUTHZ_ASSERTION__ENABLED", "true")
    monkeypatch.setenv("ZTAUTHZ_ASSERTION__ISSUER", "https://z.example")
    monkeypatch.setenv("ZTAUTHZ_ASSERTION__AUDIENCE", "https://up.example")
    monkeypatch.setenv("ZTAUTHZ_ASSERTION__KEYS", "/run/keys")
    assertion = load(tmp_path, BASE).assertion
    assert assertion.enabled and assertion.keys == Path("/run/keys")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "assertion: {enabled: true}\n",
            "5: assertion: enabled: true needs issuer, audience, keys",
        ),
        (ON + "  lifetime: 2s\n", "10: assertion.lifetime: must be between 5s and 1h"),
        (ON + "  lifetime: 1500ms\n", "10: assertion.lifetime: must be between 5s and 1h"),
        (ON + "  lifetime: 10500ms\n", "10: assertion.lifetime: must be whole seconds"),
        (ON + "  header: X-Assertion\n", "10: assertion.header: expected a lower-case header name"),
        (
            ON + "  header: authorization\n",
            "10: assertion.header: authorization carries something else",
        ),
        (
            ON + "  header: x-envoy-auth\n",
            "10: assertion.header: x-envoy-auth carries something else",
        ),
        (ON + "  header: x-auth-subject\n", "5: assertion: header: x-auth-* names other than"),
        (
            ON + "  cache_size: -1\n",
            "10: assertion.cache_size: Input should be greater than or equal to 0",
        ),
        (ON + "  signing_delay: 2d\n", "10: assertion.signing_delay: must be at most 1d"),
        (ON + "  signing_delay: 1m\n", "5: assertion: signing_delay must be at least jwks_max_age"),
        (
            ON + "  routes: [{audience: x}]\n",
            "10: assertion.routes[0]: a route needs hosts or path_prefixes",
        ),
        (ON + "  audiences: [x]\n", "10: assertion.audiences: unknown key"),
    ],
)
def test_invalid_values_name_file_line_and_key(tmp_path: Path, extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, BASE + extra)
    problem = caught.value.problems[0]
    assert problem.startswith(f"{tmp_path / 'ztauthz.yaml'}:{expected}"), problem


def test_a_custom_header_outside_x_auth_is_accepted(tmp_path: Path) -> None:
    assert load(tmp_path, BASE + ON + "  header: x-identity-assertion\n").assertion.header == (
        "x-identity-assertion"
    )
