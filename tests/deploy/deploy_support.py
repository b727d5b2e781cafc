"""Shared checks for the deployment artefacts: Kubernetes schemas, Envoy, restricted pods."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
ISTIO = DEPLOY / "istio"
COMPOSE = DEPLOY / "compose"

# Two minor versions, far apart: the oldest we claim (webhook matchConditions are GA since 1.30)
# and the newest kubernetes-validate knows. Strict: unknown fields are errors.
K8S_VERSIONS = ("1.31.0", "1.37.0")

# Custom resources kubernetes-validate has no schema for; checked by cross-reference instead.
CUSTOM_KINDS = frozenset(
    {
        ("cert-manager.io/v1", "Issuer"),
        ("cert-manager.io/v1", "Certificate"),
        ("security.istio.io/v1", "AuthorizationPolicy"),
        ("security.istio.io/v1", "PeerAuthentication"),
        ("install.istio.io/v1alpha1", "IstioOperator"),
    }
)

KUSTOMIZATIONS = {
    "k8s/base": K8S / "base",
    "k8s/injector/base": K8S / "injector" / "base",
    "k8s/injector/cert-manager": K8S / "injector" / "cert-manager",
    "k8s/examples/injected": K8S / "examples" / "injected",
    "istio": ISTIO,
}

ENVOY = Path(sys.executable).parent / "envoy"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR``: what ``kubectl apply -k`` would send."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomizations cannot be rendered here")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def strict_problems(obj: dict[str, Any]) -> list[str]:
    """Validation errors of one object against every K8S_VERSIONS schema (strict)."""
    problems = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(f"{version}: {obj['kind']} {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            if (obj["apiVersion"], obj["kind"]) not in CUSTOM_KINDS:
                problems.append(f"{version}: no schema for {obj['apiVersion']} {obj['kind']}")
    return problems


def is_custom(obj: dict[str, Any]) -> bool:
    return (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS


def envoy_validate(*args: str) -> None:
    """``envoy --mode validate``; errors and deprecation warnings both fail."""
    level = [] if "--log-level" in args else ["--log-level", "warn"]
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", *level, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "OK" in output, output
    assert "Deprecated" not in output and "[warning]" not in output, output


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every Pod and workload template."""
    out = []
    for obj in objects:
        if obj["kind"] == "Pod":
            out.append((obj["metadata"].get("name", "pod"), obj["spec"]))
        elif obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            out.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
    return out


def restricted_problems(spec: dict[str, Any]) -> list[str]:
    """Where a pod spec falls short of the restricted Pod Security profile (and our own bar:
    read-only root filesystems, resource requests and limits on every container)."""
    problems = []
    pod_sc = spec.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} is set")
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"volume {volume['name']} is a hostPath")
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c.get("securityContext", {})
        name = c["name"]
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not set")
        if sc.get("runAsUser", pod_sc.get("runAsUser", 1)) == 0:
            problems.append(f"{name}: runs as UID 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities are not dropped (ALL)")
        if sc.get("capabilities", {}).get("add"):
            problems.append(f"{name}: adds capabilities")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccomp profile is {seccomp!r}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
        resources = c.get("resources", {})
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(section, {}):
                    problems.append(f"{name}: no {section}.{resource}")
    return problems


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in spec["containers"] if c["name"] == name]
    assert len(found) == 1, [c["name"] for c in spec["containers"]]
    return found[0]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def envoy_cluster_port(bootstrap: dict[str, Any], name: str) -> tuple[str, int]:
    cluster = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == name)
    lb = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    address = lb["endpoint"]["address"]["socket_address"]
    return str(address["address"]), int(address["port_value"])


def envoy_listener_port(bootstrap: dict[str, Any], name: str) -> tuple[str, int]:
    listener = next(x for x in bootstrap["static_resources"]["listeners"] if x["name"] == name)
    address = listener["address"]["socket_address"]
    return str(address["address"]), int(address["port_value"])


def http_filters(bootstrap: dict[str, Any], listener: str = "ingress") -> list[dict[str, Any]]:
    found = next(x for x in bootstrap["static_resources"]["listeners"] if x["name"] == listener)
    hcm = found["filter_chains"][0]["filters"][0]["typed_config"]
    filters: list[dict[str, Any]] = hcm["http_filters"]
    return filters
