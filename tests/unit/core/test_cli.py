"""The ztauthz command line, run as a user runs it: a subprocess with exit codes and output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """\
server:
  check: {port: 0}
  admin: {port: 0}
issuers:
  - issuer: https://idp.example.com
    audiences: [https://api.example.com]
policies: ./policies
"""

POLICY = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: demo}
spec:
  rules:
    - id: read
      effect: allow
      match: {methods: [GET], paths: [/invoices]}
      subject: {groups_any: [finance]}
"""


def ztauthz(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "demo.yaml").write_text(POLICY)
    (tmp_path / "ztauthz.yaml").write_text(CONFIG)
    return tmp_path


def test_serve_with_bad_config_exits_2_naming_the_key(workdir: Path) -> None:
    config = workdir / "ztauthz.yaml"
    config.write_text(CONFIG.replace("audiences: [https://api.example.com]", "audiences: []"))
    result = ztauthz("serve", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}:6: issuers[0].audiences:" in result.stderr


def test_serve_with_missing_config_exits_2(tmp_path: Path) -> None:
    result = ztauthz("serve", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "configuration file not found" in result.stderr


def test_serve_with_invalid_policy_exits_2_with_file_and_line(workdir: Path) -> None:
    bad = workdir / "policies" / "demo.yaml"
    bad.write_text(POLICY.replace("effect: allow", "effect: permit"))
    result = ztauthz("serve", "--config", str(workdir / "ztauthz.yaml"))
    assert result.returncode == 2
    assert f"{bad}:7:" in result.stderr


def test_policy_check_exit_codes(workdir: Path) -> None:
    ok = ztauthz("policy", "check", str(workdir / "policies"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (workdir / "policies" / "broken.yaml").write_text(
        POLICY.replace("name: demo", "name: other").replace("GET", "FETCH")
    )
    bad = ztauthz("policy", "check", str(workdir / "policies"))
    assert bad.returncode == 1
    assert str(workdir / "policies" / "broken.yaml") + ":8:" in bad.stdout


def test_shipped_policies_are_valid() -> None:
    result = ztauthz("policy", "check", "policies")
    assert result.returncode == 0, result.stdout + result.stderr


def test_serve_never_imports_the_dev_tools() -> None:
    code = (
        "import sys, app.cli, app.main, app.pipeline, app.state;"
        "app.cli.build_parser(with_dev=False);"
        "bad = sorted(m for m in sys.modules if m.startswith('app.dev'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
