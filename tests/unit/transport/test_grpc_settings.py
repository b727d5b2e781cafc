"""``server.grpc`` and ``server.check.enabled``: gRPC beside or instead of HTTP, validated at start."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from app.dev.envoy import transport_env
from app.settings import load_settings
from tests.unit.settings.config_files import ONE_ISSUER, problems, write


def test_grpc_is_off_by_default_and_http_on(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_ISSUER)
    server = load_settings(path).server
    assert server.check.enabled and not server.grpc.enabled
    assert (server.grpc.host, server.grpc.port) == ("127.0.0.1", 9001)
    assert server.shutdown_grace == timedelta(seconds=5)


def test_grpc_beside_and_instead_of_http(tmp_path: Path) -> None:
    path = write(tmp_path, ONE_ISSUER + "server: {grpc: {enabled: true}, shutdown_grace: 2s}\n")
    beside = load_settings(path).server
    assert beside.check.enabled and beside.grpc.enabled
    assert beside.shutdown_grace == timedelta(seconds=2)
    path.write_text(ONE_ISSUER + "server: {check: {enabled: false}, grpc: {enabled: true}}\n")
    instead = load_settings(path).server
    assert not instead.check.enabled and instead.grpc.enabled


@pytest.mark.parametrize(
    ("server", "message"),
    [
        (
            "server: {check: {enabled: false}}\n",
            "enable at least one check listener",
        ),
        (
            "server: {grpc: {enabled: true, port: 9000}}\n",
            "server.grpc and server.check use the same address",
        ),
        (
            "server: {grpc: {enabled: true, port: 9100}}\n",
            "server.grpc and server.admin use the same address",
        ),
        ("server: {grpc: {enabled: true, max_message_bytes: 1000}}\n", "greater than or equal"),
        ("server: {grpc: {enabled: true, tls: true}}\n", "unknown key"),
        ("server: {shutdown_grace: -1s}\n", "expected a duration"),
    ],
    ids=[
        "no-check-listener",
        "grpc-on-check-port",
        "grpc-on-admin-port",
        "tiny-messages",
        "typo",
        "negative-grace",
    ],
)
def test_invalid_listener_settings_are_refused(tmp_path: Path, server: str, message: str) -> None:
    found = problems(tmp_path, ONE_ISSUER + server)
    assert any(message in p for p in found), found


def test_disabled_listeners_may_share_a_port(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        ONE_ISSUER + "server: {check: {enabled: false}, grpc: {enabled: true, port: 9000}}\n",
    )
    assert load_settings(path).server.grpc.port == 9000


def test_the_dev_tools_switch_transports_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, ONE_ISSUER + "server: {check: {port: 9555}, admin: {port: 9556}}\n")
    assert transport_env("http", 9555) == {}
    for name, value in transport_env("grpc", 9555).items():
        monkeypatch.setenv(name, value)
    server = load_settings(path).server
    # The environment is merged into the file's server section, not replacing it.
    assert (server.check.enabled, server.grpc.enabled, server.grpc.port) == (False, True, 9555)
    assert server.admin.port == 9556
