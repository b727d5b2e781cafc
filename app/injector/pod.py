"""Pod analysis: who asked for the sidecars, and whether and how this pod can take them.

Pure: no I/O, no clock. ``analyse`` reads one admission request and answers with what the patch
must do (``Injection``), nothing to do (None), or a refusal (``Refused``, with the HTTP code
and a message saying what to change). app/injector/patch.py turns an Injection into the
JSONPatch; app/injector/mutate.py wraps both in the AdmissionReview.

Who asked: a pod labelled or annotated ``ztauthz.dev/inject: "true"``, or any pod when the
webhook entry says its namespace opted in (``namespace_opted_in``) - unless the pod says
``"false"``. The API server cannot show namespace labels to a webhook, so the manifests send the
two cases to two paths (see deploy/k8s/injector/webhook.yaml).

A pod that already carries both sidecars needs nothing. A pod that asked but cannot be injected
safely is refused: a port clash, no way to tell its traffic port, host networking, a name the
sidecars need already taken by any of its containers (``containers``, ``initContainers`` or
``ephemeralContainers``), a port or volume name they reserve.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.injector.config import InjectorConfig

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

# Every list of containers a Pod spec has: a sidecar's name must be free in all of them.
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class MalformedReview(ValueError):
    """Not an admission.k8s.io/v1 AdmissionReview request that can be answered at all."""


class Refused(Exception):
    """The review is answered ``allowed: false`` with ``code`` and ``message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class AppPort:
    """The port Envoy takes over: container and port index, number and name (may be None)."""

    container: int
    index: int
    number: int
    name: str | None
    owner: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Injection:
    """What the patch must do to one pod (see app/injector/patch.py)."""

    pod: dict[str, Any] = field(repr=False)
    app: AppPort
    envoy_port_name: str  # the name Envoy's listener port takes (Services target it)
    renamed: str | None  # the app port's new name; None: it has none, nothing to rename
    config_map: str
    policies_config_map: str
    warnings: tuple[str, ...] = ()


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


def analyse(
    request: Mapping[str, Any], config: InjectorConfig, *, namespace_opted_in: bool = False
) -> Injection | None:
    """What to do for one admission request: None (no patch) or an Injection; raises
    Refused."""
    kind = request.get("kind") or {}
    if not isinstance(kind, dict) or (kind.get("group"), kind.get("kind")) != ("", "Pod"):
        raise Refused(400, f"malformed AdmissionReview: expected a core/v1 Pod, got {kind!r}")
    if request.get("subResource") or request.get("operation") != "CREATE":
        return None
    pod = checked_pod(request.get("object"))
    meta = pod.get("metadata") or {}
    if not asked(meta, namespace_opted_in):
        return None
    if already_injected(pod):
        return None
    spec = pod["spec"]
    if spec.get("hostNetwork"):
        raise Refused(
            422, "hostNetwork pods cannot be injected: their loopback is the node's, not the pod's"
        )
    annotations: dict[str, str] = meta.get("annotations") or {}
    config_map, policies_config_map = config_maps(annotations, config)
    app = app_port(spec["containers"], annotations.get(APP_PORT), config.default_app_port)
    check_clashes(spec, app, config)
    envoy_port_name, renamed, warnings = port_names(spec, app)
    return Injection(
        pod=pod,
        app=app,
        envoy_port_name=envoy_port_name,
        renamed=renamed,
        config_map=config_map,
        policies_config_map=policies_config_map,
        warnings=tuple(warnings),
    )


def checked_pod(pod: Any) -> dict[str, Any]:
    """The pod, if it has the shape the patch relies on; else a 400 refusal saying what is off."""

    def bad(what: str) -> Refused:
        return Refused(400, f"malformed AdmissionReview: request.object {what}")

    if not isinstance(pod, dict):
        raise bad("is missing or not an object")
    if not isinstance(pod.get("metadata", {}), dict):
        raise bad("metadata is not an object")
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise bad("has no spec")
    for key in (*CONTAINER_LISTS, "volumes"):
        items = spec.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise bad(f"spec.{key} is not a list of objects")
    if not spec.get("containers"):
        raise bad("spec.containers is empty")
    for container in all_containers(spec):
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


def all_containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every container of the spec: app, init and ephemeral ones (the spec is checked)."""
    return [c for key in CONTAINER_LISTS for c in spec.get(key, [])]


def asked(meta: Mapping[str, Any], namespace_opted_in: bool) -> bool:
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
        raise Refused(400, f'{INJECT} must be "true" or "false", got {sorted(unknown)}')
    if "false" in said:
        return False  # an explicit opt-out wins over every opt-in
    return "true" in said or namespace_opted_in


def already_injected(pod: Mapping[str, Any]) -> bool:
    """Both sidecars among the containers: injected before. A sidecar's name anywhere else
    (one of them only, or an init or ephemeral container of that name) is refused: the patch
    would give the pod two containers of one name."""
    spec = pod["spec"]
    names = {c.get("name") for c in spec["containers"]}
    present = [name for name in SIDECARS if name in names]
    elsewhere = [
        (key, c.get("name"))
        for key in CONTAINER_LISTS[1:]
        for c in spec.get(key, [])
        if c.get("name") in SIDECARS
    ]
    if elsewhere:
        key, name = elsewhere[0]
        raise Refused(
            422, f"the pod's {key} has a container named {name!r}, a sidecar's name; rename it"
        )
    marked = (pod.get("metadata") or {}).get("annotations", {}).get(STATUS) == INJECTED
    if len(present) == len(SIDECARS):
        return True
    if present:
        raise Refused(
            422, f"the pod has container {present[0]!r} but not the other sidecar; remove it"
        )
    if marked:
        raise Refused(
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


def config_maps(annotations: Mapping[str, str], config: InjectorConfig) -> tuple[str, str]:
    names = (
        annotations.get(CONFIG_MAP, config.ztauthz.config_map),
        annotations.get(POLICIES_CONFIG_MAP, config.ztauthz.policies_config_map),
    )
    for name in names:
        if len(name) > 253 or not all(_DNS_LABEL.match(part) for part in name.split(".")):
            raise Refused(400, f"{name!r} is not a valid ConfigMap name")
    return names


def app_port(containers: list[dict[str, Any]], requested: str | None, default: str) -> AppPort:
    ports = [
        AppPort(ci, pi, int(p["containerPort"]), p.get("name"), c)
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
            raise Refused(
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
    raise Refused(
        422,
        f"cannot tell which port to protect: name it {default!r} or set the annotation "
        f"{APP_PORT} to the port's name or number",
    )


def check_clashes(spec: Mapping[str, Any], app: AppPort, config: InjectorConfig) -> None:
    everyone = all_containers(spec)
    taken = {int(p["containerPort"]) for c in everyone for p in c.get("ports", [])}
    for number, what in config.ports.all().items():
        if number in taken:
            raise Refused(
                422, f"port {number} is used by the pod and by the sidecars ({what}); move it"
            )
    if app.number in config.ports.all():
        raise Refused(422, f"the app port {app.number} is a sidecar port; move it")
    names = {p.get("name") for c in everyone for p in c.get("ports", [])}
    for name in (ADMIN_PORT_NAME, HEALTH_PORT_NAME):
        if name in names:
            raise Refused(422, f"port name {name!r} is reserved for the sidecars; rename it")
    volumes = {v.get("name") for v in spec.get("volumes", [])}
    clash = sorted(volumes & set(VOLUMES))
    if clash:
        raise Refused(422, f"volume name(s) {clash} are reserved for the sidecars; rename them")


def port_names(spec: Mapping[str, Any], app: AppPort) -> tuple[str, str | None, list[str]]:
    """Envoy's port name, the app port's new name (None: unnamed, keep it) and warnings."""
    names = {p.get("name") for c in all_containers(spec) for p in c.get("ports", [])} - {None}
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
    owners = [
        p for c in all_containers(spec) for p in c.get("ports", []) if p.get("name") == app.name
    ]
    if len(owners) > 1:
        raise Refused(
            422,
            f"port name {app.name!r} is used by more than one port of the pod: a Service "
            "targeting it could reach either; give each port its own name",
        )
    renamed = f"app-{app.name}"[:15].rstrip("-")
    if renamed in names or not valid_port_name(renamed):
        raise Refused(
            422, f"cannot rename port {app.name!r} to {renamed!r} (taken or invalid); rename it"
        )
    return app.name, renamed, []
