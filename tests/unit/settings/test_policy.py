"""Configuration for grants, the candidate policy directory and hot reload."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from app.settings import ConfigError
from tests.unit.settings.config_files import ONE_ISSUER, load

BASE = ONE_ISSUER + "policies: ./policies\n"


def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, BASE)
    assert settings.grants.max_duration == timedelta(hours=8)
    assert settings.policies_candidate is None
    assert settings.reload.watch is True
    assert settings.reload.interval == timedelta(seconds=2)


def test_values_and_a_relative_candidate_directory(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        BASE
        + "grants: {max_duration: 2h}\npolicies_candidate: next\nreload: {watch: false, interval: 250ms}\n",
    )
    assert settings.grants.max_duration == timedelta(hours=2)
    assert settings.policies_candidate == tmp_path / "next"
    assert settings.reload.watch is False
    assert settings.reload.interval == timedelta(milliseconds=250)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("grants: {max_duration: 40d}\n", "5: grants.max_duration: must be between 1m and 31d"),
        ("grants: {max_duration: 10s}\n", "5: grants.max_duration: must be between 1m and 31d"),
        ("grants: {max_duration: forever}\n", "5: grants.max_duration: expected a duration"),
        ("grants: {maximum: 1h}\n", "5: grants.maximum: unknown key"),
        ("reload:\n  interval: 10ms\n", "6: reload.interval: must be between 100ms and 1h"),
        ("reload:\n  watch: sometimes\n", "6: reload.watch: Input should be a valid boolean"),
    ],
)
def test_invalid_values_name_file_line_and_key(tmp_path: Path, extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, BASE + extra)
    assert len(caught.value.problems) == 1
    problem = caught.value.problems[0]
    assert problem.startswith(f"{tmp_path / 'ztauthz.yaml'}:{expected}"), problem
