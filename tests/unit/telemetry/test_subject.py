"""Subjects in logs and spans: as is, or HMAC-SHA256 with a key from the env or a file."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from app.settings import ConfigError, TelemetrySettings
from app.telemetry.subject import load_subject_key, subject_view

KEY = "0123456789abcdef-0123456789abcdef"


def test_without_a_key_subjects_are_unchanged() -> None:
    assert subject_view(None)("alice") == "alice"
    assert load_subject_key(TelemetrySettings(), {}) is None


def test_with_a_key_subjects_are_a_stable_keyed_hash() -> None:
    view = subject_view(KEY.encode())
    expected = hmac.new(KEY.encode(), b"alice", hashlib.sha256).hexdigest()[:32]
    assert view("alice") == view("alice") == expected
    assert view("bob") != expected
    assert subject_view(b"another key of 16+ bytes")("alice") != expected


def test_key_from_the_named_environment_variable() -> None:
    settings = TelemetrySettings(subject_hash_key_env="SUBJECT_KEY")
    assert load_subject_key(settings, {"SUBJECT_KEY": f" {KEY}\n"}) == KEY.encode()


def test_key_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    assert load_subject_key(TelemetrySettings(subject_hash_key_file=path), {}) == KEY.encode()


@pytest.mark.parametrize(
    ("settings", "environ", "message"),
    [
        (TelemetrySettings(subject_hash_key_env="SUBJECT_KEY"), {}, "at least 16 bytes"),
        (TelemetrySettings(subject_hash_key_env="K"), {"K": "short"}, "at least 16 bytes"),
        (TelemetrySettings(subject_hash_key_file=Path("/nonexistent/key")), {}, "cannot read"),
    ],
    ids=["missing-env", "short-key", "missing-file"],
)
def test_a_named_but_unusable_key_refuses_to_start(
    settings: TelemetrySettings, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_subject_key(settings, environ)
    assert "short" not in str(caught.value)  # the key's value is never in the message


def test_env_and_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        TelemetrySettings(subject_hash_key_env="K", subject_hash_key_file=tmp_path / "k")
