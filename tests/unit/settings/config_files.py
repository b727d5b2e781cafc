"""Configuration files for the settings tests: written into the test's directory, then loaded
(``load``) or refused (``problems``: the messages of the ConfigError)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import ConfigError, Settings, load_settings

ONE_ISSUER = """\
issuers:
  - issuer: https://idp.example.com
    audiences: [https://api.example.com]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ztauthz.yaml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str) -> Settings:
    return load_settings(write(tmp_path, text))


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.problems
