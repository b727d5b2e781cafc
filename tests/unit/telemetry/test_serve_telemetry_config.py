"""``ztauthz serve`` refuses telemetry it cannot honour, before any port opens (exit code 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

POLICIES = Path(__file__).resolve().parents[2] / "integration" / "policies"


def serve(tmp_path: Path, extra_config: str, **env: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "ztauthz.yaml"
    config.write_text(
        "server: {check: {port: 0}, admin: {port: 0}}\n"
        "issuers: [{issuer: 'http://127.0.0.1:9', audiences: [api]}]\n"
        f"policies: {POLICIES}\n" + extra_config,
        encoding="utf-8",
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ZTAUTHZ_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--config", str(config)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


@pytest.mark.parametrize(
    ("extra_config", "env", "message"),
    [
        ("telemetry: {subject_hash_key_env: NO_SUCH_KEY_VAR}\n", {}, "NO_SUCH_KEY_VAR"),
        ("telemetry: {subject_hash_key_env: K}\n", {"K": "too-short"}, "at least 16 bytes"),
        ("", {"OTEL_TRACES_EXPORTER": "console"}, "OTEL_TRACES_EXPORTER"),
        (
            "",
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "json",
            },
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
    ids=["missing-hash-key", "short-hash-key", "unsupported-exporter", "unsupported-protocol"],
)
def test_unusable_telemetry_settings_stop_the_start(
    tmp_path: Path, extra_config: str, env: dict[str, str], message: str
) -> None:
    result = serve(tmp_path, extra_config, **env)
    assert result.returncode == 2, result.stderr
    assert "invalid configuration" in result.stderr and message in result.stderr
    assert "too-short" not in result.stderr  # a key's value is never printed
