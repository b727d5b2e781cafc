"""The injector configuration: the shipped file loads; a bootstrap of the wrong shape does not."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.injector.config import InjectorConfigError, build_config, load_injector_config
from tests.unit.injector.injector_support import SHIPPED_CONFIG

BOOTSTRAP = yaml.safe_load((SHIPPED_CONFIG.parent / "envoy.yaml").read_text())
FILE = yaml.safe_load(SHIPPED_CONFIG.read_text())


def test_shipped_configuration_names_its_ports_once_in_the_bootstrap() -> None:
    config = load_injector_config(SHIPPED_CONFIG)
    assert config.ports.model_dump() == {
        "ingress": 10000,
        "health": 9902,
        "check": 9000,
        "envoy_admin": 9901,
        "ztauthz_admin": 9100,
    }
    assert config.images.envoy.startswith("envoyproxy/envoy:v")
    assert config.bootstrap() == BOOTSTRAP
    assert config.bootstrap() is not config.bootstrap()  # each injection gets its own copy


def _cluster(b: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in b["static_resources"]["clusters"] if c["name"] == name)
    return found


def _socket(cluster: dict[str, Any]) -> dict[str, Any]:
    lb = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    address: dict[str, Any] = lb["endpoint"]["address"]["socket_address"]
    return address


def _drop_health(b: dict[str, Any]) -> None:
    b["static_resources"]["listeners"] = [
        x for x in b["static_resources"]["listeners"] if x["name"] != "health"
    ]


def _public_ztauthz(b: dict[str, Any]) -> None:
    _socket(_cluster(b, "ztauthz"))["address"] = "10.0.0.7"


def _public_admin(b: dict[str, Any]) -> None:
    b["admin"]["address"]["socket_address"]["address"] = "0.0.0.0"  # noqa: S104


def _two_upstreams(b: dict[str, Any]) -> None:
    endpoints = _cluster(b, "upstream")["load_assignment"]["endpoints"]
    endpoints.append(copy.deepcopy(endpoints[0]))


def _same_ports(b: dict[str, Any]) -> None:
    _socket(_cluster(b, "ztauthz"))["port_value"] = 10000


def _port_as_text(b: dict[str, Any]) -> None:
    _socket(_cluster(b, "upstream"))["port_value"] = "8080"


BROKEN: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (_drop_health, "exactly one listener named 'health'"),
    (_public_ztauthz, "cluster 'ztauthz' must be on loopback"),
    (_public_admin, "the admin address must be on loopback"),
    (_two_upstreams, "cluster 'upstream' needs exactly one endpoint"),
    (_same_ports, "sidecar ports must all differ"),
    (_port_as_text, "cluster 'upstream': expected socket_address"),
]


@pytest.mark.parametrize(("breaks", "message"), BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_a_bootstrap_of_the_wrong_shape_is_refused(
    breaks: Callable[[dict[str, Any]], None], message: str
) -> None:
    bootstrap = copy.deepcopy(BOOTSTRAP)
    breaks(bootstrap)
    with pytest.raises(InjectorConfigError, match=message):
        build_config(FILE, bootstrap)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"imagez": {}}, "imagez: Extra inputs are not permitted"),
        ({"images": {"ztauthz": "z"}}, "images.envoy: Field required"),
        ({"envoy": {"bootstrap": "envoy.yaml", "resources": {"limits": {}}}}, "resources"),
        ({"ztauthz": {"admin_port": 70000}}, "ztauthz.admin_port"),
    ],
)
def test_an_invalid_injector_file_names_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InjectorConfigError, match=message):
        build_config({**FILE, **change}, BOOTSTRAP)


def test_missing_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(InjectorConfigError, match="file not found"):
        load_injector_config(tmp_path / "nope.yaml")
    config = tmp_path / "injector.yaml"
    config.write_text(SHIPPED_CONFIG.read_text())
    with pytest.raises(InjectorConfigError, match=r"envoy\.bootstrap: no such file"):
        load_injector_config(config)
