"""Idle connections between Envoy and the check listener are closed by Envoy, never first by
ztauthz: a close racing a request Envoy just sent would fail that request with a 503."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.durations import parse_duration
from app.transport.http import CHECK_KEEP_ALIVE_SECONDS

BOOTSTRAPS = sorted((Path(__file__).parents[3] / "deploy" / "envoy").glob("*.yaml"))
ENVOY_DEFAULT_IDLE_TIMEOUT = 3600.0  # common_http_protocol_options.idle_timeout, unset


def idle_timeout(cluster: dict[str, Any]) -> float:
    options = cluster.get("typed_extension_protocol_options") or {}
    for typed in options.values():
        common = typed.get("common_http_protocol_options") or {}
        if "idle_timeout" in common:
            return parse_duration(common["idle_timeout"]).total_seconds()
    return ENVOY_DEFAULT_IDLE_TIMEOUT


@pytest.mark.parametrize("bootstrap", BOOTSTRAPS, ids=[path.name for path in BOOTSTRAPS])
def test_envoy_closes_idle_check_connections_before_ztauthz_would(bootstrap: Path) -> None:
    config = yaml.safe_load(bootstrap.read_text())
    clusters = [c for c in config["static_resources"]["clusters"] if c["name"] == "ztauthz"]
    assert clusters, f"{bootstrap.name}: no ztauthz cluster"
    assert idle_timeout(clusters[0]) < CHECK_KEEP_ALIVE_SECONDS
