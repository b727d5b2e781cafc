"""The injector's configuration: images, the Envoy bootstrap template, defaults, resources.

One YAML file (mounted from a ConfigMap beside the webhook), validated once at start. The
ports of the injected sidecars are read from the Envoy bootstrap template, so they are written
down in one place only:

- listener ``ingress``   the port the pod's traffic port is pointed at,
- listener ``health``    Envoy's readiness port for the kubelet (proxies admin ``/ready``),
- cluster ``ztauthz``    where Envoy asks ztauthz (ztauthz's check listener, on loopback),
- cluster ``upstream``   the application; its port is set per pod at injection.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.settings.server import ADMIN_PORT
from app.yamlsrc import YamlError, load_single


class InjectorConfigError(Exception):
    """The injector configuration (or its Envoy bootstrap) cannot be used."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|Ki|Mi|Gi)?$"


class Quantities(_Model):
    """Kubernetes quantities (``100m`` CPU, ``64Mi`` memory)."""

    cpu: str = Field(pattern=_QUANTITY)
    memory: str = Field(pattern=_QUANTITY)


class Resources(_Model):
    requests: Quantities
    limits: Quantities


class Images(_Model):
    ztauthz: str = Field(min_length=1)
    envoy: str = Field(min_length=1)
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class EnvoySection(_Model):
    bootstrap: Path
    run_as_user: int = Field(default=101, ge=1)
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical", "off"] = "info"
    resources: Resources = Resources(
        requests=Quantities(cpu="50m", memory="64Mi"),
        limits=Quantities(cpu="1", memory="256Mi"),
    )


class ZtauthzSection(_Model):
    admin_port: int = Field(default=ADMIN_PORT, ge=1, le=65535)
    run_as_user: int = Field(default=65532, ge=1)
    config_map: str = "ztauthz-config"
    policies_config_map: str = "ztauthz-policies"
    resources: Resources = Resources(
        requests=Quantities(cpu="50m", memory="96Mi"),
        limits=Quantities(cpu="1", memory="256Mi"),
    )


class _File(_Model):
    images: Images
    envoy: EnvoySection
    ztauthz: ZtauthzSection = ZtauthzSection()
    default_app_port: str = "http"


class Ports(_Model):
    """The sidecars' ports, all derived from the bootstrap except ztauthz's admin port."""

    ingress: int
    health: int
    check: int
    envoy_admin: int
    ztauthz_admin: int

    def all(self) -> dict[int, str]:
        return {
            self.ingress: "Envoy ingress",
            self.health: "Envoy health",
            self.check: "ztauthz check",
            self.envoy_admin: "Envoy admin",
            self.ztauthz_admin: "ztauthz admin",
        }


class InjectorConfig(_Model):
    """Everything ``mutate`` needs; built by :func:`load_injector_config` (or directly)."""

    images: Images
    envoy: EnvoySection
    ztauthz: ZtauthzSection
    default_app_port: str
    bootstrap_json: str  # the template, as JSON text: immutable, copied per injection
    ports: Ports

    def bootstrap(self) -> dict[str, Any]:
        """A fresh, mutable copy of the Envoy bootstrap template."""
        data: dict[str, Any] = json.loads(self.bootstrap_json)
        return data


def _socket_address(node: Any, where: str) -> dict[str, Any]:
    address = node.get("socket_address") if isinstance(node, dict) else None
    if not (
        isinstance(address, dict)
        and isinstance(address.get("address"), str)
        and isinstance(address.get("port_value"), int)
    ):
        raise InjectorConfigError(f"{where}: expected socket_address {{address, port_value}}")
    return address


def _named(items: Any, name: str, kind: str) -> dict[str, Any]:
    found = [i for i in items or [] if isinstance(i, dict) and i.get("name") == name]
    if len(found) != 1:
        raise InjectorConfigError(f"Envoy bootstrap: expected exactly one {kind} named {name!r}")
    return found[0]


def cluster_address(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    """The one endpoint's socket_address of cluster ``name`` (mutable, inside ``bootstrap``)."""
    cluster = _named(bootstrap.get("static_resources", {}).get("clusters"), name, "cluster")
    try:
        endpoints = cluster["load_assignment"]["endpoints"]
        lb_endpoints = [e for group in endpoints for e in group["lb_endpoints"]]
    except (KeyError, TypeError):
        lb_endpoints = []
    if len(lb_endpoints) != 1:
        raise InjectorConfigError(f"Envoy bootstrap: cluster {name!r} needs exactly one endpoint")
    endpoint = lb_endpoints[0].get("endpoint") if isinstance(lb_endpoints[0], dict) else None
    address = endpoint.get("address") if isinstance(endpoint, dict) else None
    return _socket_address(address, f"cluster {name!r}")


def listener_address(bootstrap: dict[str, Any], name: str) -> dict[str, Any]:
    listener = _named(bootstrap.get("static_resources", {}).get("listeners"), name, "listener")
    return _socket_address(listener.get("address"), f"listener {name!r}")


def _loopback(address: dict[str, Any], where: str) -> None:
    try:
        ok = ipaddress.ip_address(str(address["address"])).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise InjectorConfigError(f"Envoy bootstrap: {where} must be on loopback (127.0.0.1)")


def ports_of(bootstrap: dict[str, Any], ztauthz_admin: int) -> Ports:
    """Read and check the sidecar ports; ztauthz, the app and Envoy admin stay on loopback."""
    check = cluster_address(bootstrap, "ztauthz")
    upstream = cluster_address(bootstrap, "upstream")
    admin = _socket_address(bootstrap.get("admin", {}).get("address"), "admin")
    for address, where in ((check, "cluster 'ztauthz'"), (upstream, "cluster 'upstream'")):
        _loopback(address, where)
    _loopback(admin, "the admin address")
    ports = Ports(
        ingress=int(listener_address(bootstrap, "ingress")["port_value"]),
        health=int(listener_address(bootstrap, "health")["port_value"]),
        check=int(check["port_value"]),
        envoy_admin=int(admin["port_value"]),
        ztauthz_admin=ztauthz_admin,
    )
    if len(ports.all()) != 5:
        raise InjectorConfigError(f"sidecar ports must all differ: {ports.model_dump()}")
    return ports


def build_config(data: Any, bootstrap: Any) -> InjectorConfig:
    """Validate the parsed injector file and the parsed bootstrap into an InjectorConfig."""
    try:
        file = _File.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise InjectorConfigError(f"invalid injector configuration: {problems}") from None
    if not isinstance(bootstrap, dict):
        raise InjectorConfigError("Envoy bootstrap: expected a mapping")
    ports = ports_of(bootstrap, file.ztauthz.admin_port)
    return InjectorConfig(
        images=file.images,
        envoy=file.envoy,
        ztauthz=file.ztauthz,
        default_app_port=file.default_app_port,
        bootstrap_json=json.dumps(bootstrap, separators=(",", ":"), sort_keys=True),
        ports=ports,
    )


def load_injector_config(path: Path) -> InjectorConfig:
    """Read the injector file and the bootstrap it names (relative to the file)."""
    try:
        data = load_single(path).data
        bootstrap_path = Path(str((data or {}).get("envoy", {}).get("bootstrap", "")))
        if not bootstrap_path.is_absolute():
            bootstrap_path = path.parent / bootstrap_path
        bootstrap = load_single(bootstrap_path).data if bootstrap_path.is_file() else None
    except FileNotFoundError:
        raise InjectorConfigError(f"{path}: file not found") from None
    except (YamlError, AttributeError) as exc:
        raise InjectorConfigError(f"{path}: {exc}") from None
    if bootstrap is None:
        raise InjectorConfigError(f"{path}: envoy.bootstrap: no such file {bootstrap_path}")
    return build_config(data, bootstrap)
