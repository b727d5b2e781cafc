"""Patch building: the JSONPatch (RFC 6902) that gives one analysed pod its sidecars.

Pure: no I/O, no clock. For an ``Injection`` (app/injector/pod.py) the patch

- appends the ``ztauthz`` and ``ztauthz-envoy`` containers (restricted security context,
  probes, resources) and their volumes (the config and policy ConfigMaps, two emptyDirs),
- points the pod's traffic port at Envoy: Envoy's listener port takes the app port's *name*
  (so a Service with ``targetPort: http`` now reaches Envoy) and the app's port is renamed
  ``app-<name>``; every reference to the old name in the app container follows the rename
  (its probes and its lifecycle hooks: ``httpGet`` and ``tcpSocket`` name ports of their own
  container), so the app's own checks keep reaching the app; Envoy forwards to the app on
  127.0.0.1,
- marks the pod ``ztauthz.dev/status: injected``.
"""

from __future__ import annotations

import json
from typing import Any

from app.injector.config import InjectorConfig, cluster_address
from app.injector.pod import (
    ADMIN_PORT_NAME,
    ENVOY,
    HEALTH_PORT_NAME,
    INJECTED,
    STATUS,
    VOLUME_CONFIG,
    VOLUME_ENVOY_TMP,
    VOLUME_POLICIES,
    VOLUME_TMP,
    ZTAUTHZ,
    AppPort,
    Injection,
)

CONFIG_DIR = "/etc/ztauthz/config"
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"
POLICIES_DIR = "/etc/ztauthz/policies"

# Where a container names one of its own ports: probes and lifecycle hooks, each with an
# httpGet or tcpSocket handler (a grpc probe takes a number only; exec and sleep no port).
_PORT_USERS = (
    ("livenessProbe",),
    ("readinessProbe",),
    ("startupProbe",),
    ("lifecycle", "postStart"),
    ("lifecycle", "preStop"),
)
_PORT_HANDLERS = ("httpGet", "tcpSocket")


def pointer(*parts: str | int) -> str:
    """A JSON Pointer (RFC 6901): '~' and '/' in keys are escaped."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def build_patch(injection: Injection, config: InjectorConfig) -> tuple[dict[str, Any], ...]:
    pod = injection.pod
    spec = pod["spec"]
    meta = pod.get("metadata") or {}
    app = injection.app
    patch: list[dict[str, Any]] = []
    if injection.renamed is not None:
        patch.append(
            {
                "op": "replace",
                "path": pointer("spec", "containers", app.container, "ports", app.index, "name"),
                "value": injection.renamed,
            }
        )
        patch.extend(follow_rename(app, injection.renamed))
    patch.append({"op": "add", "path": "/spec/containers/-", "value": ztauthz_container(config)})
    patch.append(
        {
            "op": "add",
            "path": "/spec/containers/-",
            "value": envoy_container(config, app.number, injection.envoy_port_name),
        }
    )
    volumes = sidecar_volumes(injection.config_map, injection.policies_config_map)
    if "volumes" in spec:
        patch.extend({"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes)
    else:
        patch.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    if meta.get("annotations") is not None:
        patch.append(
            {"op": "add", "path": pointer("metadata", "annotations", STATUS), "value": INJECTED}
        )
    elif isinstance(pod.get("metadata"), dict):
        patch.append({"op": "add", "path": "/metadata/annotations", "value": {STATUS: INJECTED}})
    else:
        patch.append(
            {"op": "add", "path": "/metadata", "value": {"annotations": {STATUS: INJECTED}}}
        )
    return tuple(patch)


def follow_rename(app: AppPort, renamed: str) -> list[dict[str, Any]]:
    """Every probe and lifecycle hook of the app container that named the moved port now
    names its new name."""
    ops = []
    for where in _PORT_USERS:
        node: Any = app.owner
        for key in where:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        for handler in _PORT_HANDLERS:
            action = node.get(handler)
            if isinstance(action, dict) and action.get("port") == app.name:
                path = pointer("spec", "containers", app.container, *where, handler, "port")
                ops.append({"op": "replace", "path": path, "value": renamed})
    return ops


def _security_context(uid: int) -> dict[str, Any]:
    """The restricted Pod Security profile, per container."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def ztauthz_container(config: InjectorConfig) -> dict[str, Any]:
    ports = config.ports
    probe = {"port": ADMIN_PORT_NAME, "scheme": "HTTP"}
    return {
        "name": ZTAUTHZ,
        "image": config.images.ztauthz,
        "imagePullPolicy": config.images.pull_policy,
        "args": ["serve", "--config", CONFIG_FILE],
        # The environment beats the config file: these keep ztauthz where Envoy looks for it.
        "env": [
            {"name": "ZTAUTHZ_SERVER__CHECK__HOST", "value": "127.0.0.1"},
            {"name": "ZTAUTHZ_SERVER__CHECK__PORT", "value": str(ports.check)},
            {"name": "ZTAUTHZ_SERVER__ADMIN__HOST", "value": "0.0.0.0"},  # noqa: S104 - kubelet
            {"name": "ZTAUTHZ_SERVER__ADMIN__PORT", "value": str(ports.ztauthz_admin)},
            {"name": "ZTAUTHZ_POLICIES", "value": POLICIES_DIR},
        ],
        "ports": [{"name": ADMIN_PORT_NAME, "containerPort": ports.ztauthz_admin}],
        "livenessProbe": {"httpGet": {"path": "/healthz", **probe}, "periodSeconds": 10},
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe}, "periodSeconds": 5},
        "resources": config.ztauthz.resources.model_dump(),
        "securityContext": _security_context(config.ztauthz.run_as_user),
        "volumeMounts": [
            {"name": VOLUME_CONFIG, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": VOLUME_POLICIES, "mountPath": POLICIES_DIR, "readOnly": True},
            {"name": VOLUME_TMP, "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
        ],
    }


def envoy_bootstrap(config: InjectorConfig, app_port: int) -> dict[str, Any]:
    """The bootstrap template with the upstream cluster pointed at the app's port."""
    bootstrap = config.bootstrap()
    cluster_address(bootstrap, "upstream")["port_value"] = app_port
    return bootstrap


def envoy_container(config: InjectorConfig, app_port: int, port_name: str) -> dict[str, Any]:
    bootstrap = json.dumps(envoy_bootstrap(config, app_port), separators=(",", ":"))
    probe = {"httpGet": {"path": "/ready", "port": HEALTH_PORT_NAME, "scheme": "HTTP"}}
    return {
        "name": ENVOY,
        "image": config.images.envoy,
        "imagePullPolicy": config.images.pull_policy,
        "command": ["envoy"],
        "args": [
            "--config-yaml",
            bootstrap,
            "--disable-hot-restart",
            "--log-level",
            config.envoy.log_level,
        ],
        "ports": [
            {"name": port_name, "containerPort": config.ports.ingress},
            {"name": HEALTH_PORT_NAME, "containerPort": config.ports.health},
        ],
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
        "readinessProbe": {**probe, "periodSeconds": 5},
        "resources": config.envoy.resources.model_dump(),
        "securityContext": _security_context(config.envoy.run_as_user),
        "volumeMounts": [{"name": VOLUME_ENVOY_TMP, "mountPath": "/tmp"}],  # noqa: S108
    }


def sidecar_volumes(config_map: str, policies_config_map: str) -> list[dict[str, Any]]:
    tmp = {"medium": "Memory", "sizeLimit": "16Mi"}
    return [
        {"name": VOLUME_CONFIG, "configMap": {"name": config_map}},
        {"name": VOLUME_POLICIES, "configMap": {"name": policies_config_map}},
        {"name": VOLUME_TMP, "emptyDir": dict(tmp)},
        {"name": VOLUME_ENVOY_TMP, "emptyDir": dict(tmp)},
    ]
