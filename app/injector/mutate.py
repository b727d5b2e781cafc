"""``mutate``: an admission.k8s.io/v1 AdmissionReview in, the AdmissionReview answer out.

Pure: no I/O, no clock. For a Pod that asked for the sidecars it answers with a JSONPatch that

- appends the ``ztauthz`` and ``ztauthz-envoy`` containers (restricted security context,
  probes, resources) and their volumes (the config and policy ConfigMaps, two emptyDirs),
- points the pod's traffic port at Envoy: Envoy's listener port takes the app port's *name*
  (so a Service with ``targetPort: http`` now reaches Envoy) and the app's port is renamed
  ``app-<name>`` (its own probes follow the rename); Envoy forwards to the app on 127.0.0.1,
- marks the pod ``ztauthz.dev/status: injected``.

Who asked: a pod labelled or annotated ``ztauthz.dev/inject: "true"``, or any pod when the
webhook entry says its namespace opted in (``namespace_opted_in``) - unless the pod says
``"false"``. The API server cannot show namespace labels to a webhook, so the manifests send the
two cases to two paths (see deploy/k8s/injector/webhook.yaml).

Idempotent: a pod that already carries both sidecars gets no patch. Pods that did not ask get
none either. A pod that asked but cannot be injected safely (a port clash, no way to tell its
traffic port, host networking) is refused with a message saying what to change: a pod that
asked for the authorization sidecar never starts without it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.injector.config import InjectorConfig, cluster_address

API_VERSION = "admission.k8s.io/v1"

INJECT = "ztauthz.dev/inject"
STATUS = "ztauthz.dev/status"
APP_PORT = "ztauthz.dev/app-port"
CONFIG_MAP = "ztauthz.dev/config-map"
POLICIES_CONFIG_MAP = "ztauthz.dev/policies-config-map"
INJECTED = "injected"

ZTAUTHZ = "ztauthz"
ENVOY = "ztauthz-envoy"
SIDECARS = (ZTAUTHZ, ENVOY)
ADMIN_PORT_NAME = "ztauthz-admin"
HEALTH_PORT_NAME = "envoy-health"
VOLUME_CONFIG = "ztauthz-config"
VOLUME_POLICIES = "ztauthz-policies"
VOLUME_TMP = "ztauthz-tmp"
VOLUME_ENVOY_TMP = "ztauthz-envoy-tmp"
VOLUMES = (VOLUME_CONFIG, VOLUME_POLICIES, VOLUME_TMP, VOLUME_ENVOY_TMP)

CONFIG_DIR = "/etc/ztauthz/config"
CONFIG_FILE = f"{CONFIG_DIR}/config.yaml"
POLICIES_DIR = "/etc/ztauthz/policies"

_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class MalformedReview(ValueError):
    """Not an admission.k8s.io/v1 AdmissionReview request that can be answered at all."""


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Plan:
    """What to answer for one review: a patch (empty: none) and warnings for the client."""

    patch: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _AppPort:
    container: int
    index: int
    number: int
    name: str | None
    owner: dict[str, Any] = field(repr=False)


def mutate(
    review: Mapping[str, Any], config: InjectorConfig, *, namespace_opted_in: bool = False
) -> dict[str, Any]:
    """Answer one AdmissionReview. Raises :class:`MalformedReview` when there is no request uid
    to answer to; any other problem is answered as ``allowed: false`` with a clear message."""
    uid, request = read_request(review)
    try:
        plan = _plan(request, config, namespace_opted_in=namespace_opted_in)
    except _Refused as exc:
        return answer(uid, allowed=False, code=exc.code, message=exc.message)
    return answer(uid, allowed=True, patch=plan.patch, warnings=plan.warnings)


def read_request(review: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The request uid and body of an AdmissionReview, or :class:`MalformedReview`."""
    if not isinstance(review, Mapping):
        raise MalformedReview("expected a JSON object (an AdmissionReview)")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        raise MalformedReview(
            f"expected apiVersion {API_VERSION!r} and kind 'AdmissionReview', got "
            f"{review.get('apiVersion')!r} and {review.get('kind')!r}"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("the AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedReview("request.uid is missing or not a string")
    return uid, request


def answer(
    uid: str,
    *,
    allowed: bool,
    patch: tuple[dict[str, Any], ...] = (),
    warnings: tuple[str, ...] = (),
    code: int = 200,
    message: str = "",
) -> dict[str, Any]:
    """An AdmissionReview response in the exact shape the API server expects."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(patch)).encode()).decode("ascii")
    if warnings:
        response["warnings"] = list(warnings)
    if not allowed:
        response["status"] = {"code": code, "message": f"ztauthz injector: {message}"}
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def _plan(
    request: Mapping[str, Any], config: InjectorConfig, *, namespace_opted_in: bool = False
) -> Plan:
    """Decide and build the patch for one admission request (raises _Refused)."""
    kind = request.get("kind") or {}
    if not isinstance(kind, dict) or (kind.get("group"), kind.get("kind")) != ("", "Pod"):
        raise _Refused(400, f"malformed AdmissionReview: expected a core/v1 Pod, got {kind!r}")
    if request.get("subResource") or request.get("operation") != "CREATE":
        return Plan()
    pod = _checked_pod(request.get("object"))
    meta = pod.get("metadata") or {}
    if not _asked(meta, namespace_opted_in):
        return Plan()
    if _already_injected(pod):
        return Plan()
    return _inject(pod, config)


def _checked_pod(pod: Any) -> dict[str, Any]:
    """The pod, if it has the shape the patch relies on; else a 400 refusal saying what is off."""

    def bad(what: str) -> _Refused:
        return _Refused(400, f"malformed AdmissionReview: request.object {what}")

    if not isinstance(pod, dict):
        raise bad("is missing or not an object")
    if not isinstance(pod.get("metadata", {}), dict):
        raise bad("metadata is not an object")
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise bad("has no spec")
    for key in ("containers", "initContainers", "volumes"):
        items = spec.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise bad(f"spec.{key} is not a list of objects")
    if not spec.get("containers"):
        raise bad("spec.containers is empty")
    for container in spec["containers"] + spec.get("initContainers", []):
        ports = container.get("ports", [])
        if not isinstance(ports, list) or not all(
            isinstance(p, dict) and isinstance(p.get("containerPort"), int) for p in ports
        ):
            raise bad(f"container {container.get('name')!r} has malformed ports")
    for section in ("labels", "annotations"):
        values = (pod.get("metadata") or {}).get(section, {})
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise bad(f"metadata.{section} is not a map of strings")
    return pod


def _asked(meta: Mapping[str, Any], namespace_opted_in: bool) -> bool:
    said = {
        value
        for value in (
            (meta.get("labels") or {}).get(INJECT),
            (meta.get("annotations") or {}).get(INJECT),
        )
        if value is not None
    }
    unknown = said - {"true", "false"}
    if unknown:
        raise _Refused(400, f'{INJECT} must be "true" or "false", got {sorted(unknown)}')
    if "false" in said:
        return False  # an explicit opt-out wins over every opt-in
    return "true" in said or namespace_opted_in


def _already_injected(pod: Mapping[str, Any]) -> bool:
    names = {c.get("name") for c in pod["spec"]["containers"]}
    present = [name for name in SIDECARS if name in names]
    marked = (pod.get("metadata") or {}).get("annotations", {}).get(STATUS) == INJECTED
    if len(present) == len(SIDECARS):
        return True
    if present:
        raise _Refused(
            422, f"the pod has container {present[0]!r} but not the other sidecar; remove it"
        )
    if marked:
        raise _Refused(
            422,
            f"the pod is annotated {STATUS}: {INJECTED} but has no sidecars; remove the "
            "annotation (it is set by the injector, not by hand)",
        )
    return False


def valid_port_name(name: str) -> bool:
    """Kubernetes IANA_SVC_NAME: 1-15 of [a-z0-9-], a letter, no '-' at an end, no '--'."""
    return (
        0 < len(name) <= 15
        and re.fullmatch(r"[a-z0-9-]+", name) is not None
        and re.search(r"[a-z]", name) is not None
        and not name.startswith("-")
        and not name.endswith("-")
        and "--" not in name
    )


def _pointer(*parts: str | int) -> str:
    """A JSON Pointer (RFC 6901): '~' and '/' in keys are escaped."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _inject(pod: dict[str, Any], config: InjectorConfig) -> Plan:
    spec = pod["spec"]
    meta = pod.get("metadata") or {}
    annotations: dict[str, str] = meta.get("annotations") or {}
    if spec.get("hostNetwork"):
        raise _Refused(
            422, "hostNetwork pods cannot be injected: their loopback is the node's, not the pod's"
        )
    config_maps = _config_maps(annotations, config)
    app = _app_port(spec["containers"], annotations.get(APP_PORT), config.default_app_port)
    _check_clashes(spec, app, config)
    envoy_port_name, renamed, warnings = _port_names(spec, app)

    patch: list[dict[str, Any]] = []
    if renamed is not None:
        patch.append(
            {
                "op": "replace",
                "path": _pointer("spec", "containers", app.container, "ports", app.index, "name"),
                "value": renamed,
            }
        )
        patch.extend(_follow_probes(app, renamed))
    patch.append({"op": "add", "path": "/spec/containers/-", "value": _ztauthz_container(config)})
    patch.append(
        {
            "op": "add",
            "path": "/spec/containers/-",
            "value": _envoy_container(config, app.number, envoy_port_name),
        }
    )
    volumes = _volumes(*config_maps)
    if "volumes" in spec:
        patch.extend({"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes)
    else:
        patch.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    if meta.get("annotations") is not None:
        patch.append(
            {"op": "add", "path": _pointer("metadata", "annotations", STATUS), "value": INJECTED}
        )
    elif isinstance(pod.get("metadata"), dict):
        patch.append({"op": "add", "path": "/metadata/annotations", "value": {STATUS: INJECTED}})
    else:
        patch.append(
            {"op": "add", "path": "/metadata", "value": {"annotations": {STATUS: INJECTED}}}
        )
    return Plan(patch=tuple(patch), warnings=tuple(warnings))


def _config_maps(annotations: Mapping[str, str], config: InjectorConfig) -> tuple[str, str]:
    names = (
        annotations.get(CONFIG_MAP, config.ztauthz.config_map),
        annotations.get(POLICIES_CONFIG_MAP, config.ztauthz.policies_config_map),
    )
    for name in names:
        if len(name) > 253 or not all(_DNS_LABEL.match(part) for part in name.split(".")):
            raise _Refused(400, f"{name!r} is not a valid ConfigMap name")
    return names


def _app_port(containers: list[dict[str, Any]], requested: str | None, default: str) -> _AppPort:
    ports = [
        _AppPort(ci, pi, int(p["containerPort"]), p.get("name"), c)
        for ci, c in enumerate(containers)
        for pi, p in enumerate(c.get("ports", []))
        if p.get("protocol", "TCP") == "TCP"
    ]
    if requested is not None:
        found = [
            p
            for p in ports
            if (requested.isdigit() and p.number == int(requested)) or p.name == requested
        ]
        if len(found) != 1:
            raise _Refused(
                422,
                f"annotation {APP_PORT}={requested!r} names no single TCP port of the pod's "
                "containers",
            )
        return found[0]
    by_name = [p for p in ports if p.name == default]
    if len(by_name) == 1:
        return by_name[0]
    if len(ports) == 1:
        return ports[0]
    raise _Refused(
        422,
        f"cannot tell which port to protect: name it {default!r} or set the annotation "
        f"{APP_PORT} to the port's name or number",
    )


def _check_clashes(spec: Mapping[str, Any], app: _AppPort, config: InjectorConfig) -> None:
    everyone = spec["containers"] + spec.get("initContainers", [])
    taken = {int(p["containerPort"]) for c in everyone for p in c.get("ports", [])}
    for number, what in config.ports.all().items():
        if number in taken:
            raise _Refused(
                422, f"port {number} is used by the pod and by the sidecars ({what}); move it"
            )
    if app.number in config.ports.all():
        raise _Refused(422, f"the app port {app.number} is a sidecar port; move it")
    names = {p.get("name") for c in everyone for p in c.get("ports", [])}
    for name in (ADMIN_PORT_NAME, HEALTH_PORT_NAME):
        if name in names:
            raise _Refused(422, f"port name {name!r} is reserved for the sidecars; rename it")
    volumes = {v.get("name") for v in spec.get("volumes", [])}
    clash = sorted(volumes & set(VOLUMES))
    if clash:
        raise _Refused(422, f"volume name(s) {clash} are reserved for the sidecars; rename them")


def _port_names(spec: Mapping[str, Any], app: _AppPort) -> tuple[str, str | None, list[str]]:
    """Envoy's port name, the app port's new name (None: unnamed, keep it) and warnings."""
    everyone = spec["containers"] + spec.get("initContainers", [])
    names = {p.get("name") for c in everyone for p in c.get("ports", [])} - {None}
    if app.name is None:
        envoy_name = "http" if "http" not in names else "ztauthz-http"
        return (
            envoy_name,
            None,
            [
                f"port {app.number} has no name: Services must target port {envoy_name!r} "
                "(Envoy) to be authorized"
            ],
        )
    renamed = f"app-{app.name}"[:15].rstrip("-")
    if renamed in names or not valid_port_name(renamed):
        raise _Refused(
            422, f"cannot rename port {app.name!r} to {renamed!r} (taken or invalid); rename it"
        )
    return app.name, renamed, []


def _follow_probes(app: _AppPort, renamed: str) -> list[dict[str, Any]]:
    """The app container's probes that named the moved port now name its new name."""
    ops = []
    for probe in _PROBES:
        handlers = app.owner.get(probe) or {}
        for handler in ("httpGet", "tcpSocket"):
            if (handlers.get(handler) or {}).get("port") == app.name:
                ops.append(
                    {
                        "op": "replace",
                        "path": _pointer(
                            "spec", "containers", app.container, probe, handler, "port"
                        ),
                        "value": renamed,
                    }
                )
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


def _ztauthz_container(config: InjectorConfig) -> dict[str, Any]:
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


def _envoy_container(config: InjectorConfig, app_port: int, port_name: str) -> dict[str, Any]:
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


def _volumes(config_map: str, policies_config_map: str) -> list[dict[str, Any]]:
    tmp = {"medium": "Memory", "sizeLimit": "16Mi"}
    return [
        {"name": VOLUME_CONFIG, "configMap": {"name": config_map}},
        {"name": VOLUME_POLICIES, "configMap": {"name": policies_config_map}},
        {"name": VOLUME_TMP, "emptyDir": dict(tmp)},
        {"name": VOLUME_ENVOY_TMP, "emptyDir": dict(tmp)},
    ]
