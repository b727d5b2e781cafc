"""The Envoy configurations for compose and Kubernetes: valid for the real Envoy, and the same
authorization settings as the canonical deploy/envoy/envoy.yaml (only addresses, ports and
tracing may differ)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_support import (
    COMPOSE,
    DEPLOY,
    K8S,
    envoy_cluster_port,
    envoy_validate,
    http_filters,
)

CANONICAL = DEPLOY / "envoy" / "envoy.yaml"
CONFIGS = [
    COMPOSE / "envoy.yaml",
    K8S / "base" / "envoy.yaml",
    K8S / "injector" / "base" / "envoy.yaml",
]
IDS = [str(p.relative_to(DEPLOY)) for p in CONFIGS]


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def hcm(bootstrap: dict[str, Any]) -> dict[str, Any]:
    listener = next(x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "ingress")
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_envoy_accepts_the_config(path: Path) -> None:
    envoy_validate("-c", str(path))


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_authorization_settings_match_the_canonical_config(path: Path) -> None:
    canonical, config = load(CANONICAL), load(path)
    assert http_filters(config) == http_filters(canonical)
    ours, theirs = hcm(config), hcm(canonical)
    differing = {k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)}
    assert differing <= {"tracing"}
    assert config["overload_manager"] == canonical["overload_manager"]


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_ztauthz_and_admin_stay_on_loopback(path: Path) -> None:
    config = load(path)
    assert envoy_cluster_port(config, "ztauthz")[0] == "127.0.0.1"
    assert envoy_cluster_port(config, "upstream")[0] == "127.0.0.1"
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    ext_authz = next(f for f in http_filters(config) if f["name"] == "envoy.filters.http.ext_authz")
    assert ext_authz["typed_config"]["failure_mode_allow"] is False


def test_a_broken_config_is_caught() -> None:
    config = load(COMPOSE / "envoy.yaml")
    config["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    with pytest.raises(AssertionError):
        envoy_validate("--config-yaml", yaml.safe_dump(config))
