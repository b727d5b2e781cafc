"""What the injector makes of real pods: the patched Pod validates strictly on two Kubernetes
versions, holds exactly the expected containers, runs a valid Envoy, and a second pass changes
nothing. Reviews are built field for field as the API server sends them; patches are applied
with a JSON Patch library (RFC 6902), as the API server does."""

from __future__ import annotations

import base64
import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml
from cel.cel import evaluate as cel_evaluate

from app.injector.config import InjectorConfig, load_injector_config
from app.injector.mutate import mutate
from app.settings import load_settings
from tests.deploy.deploy_support import (
    K8S,
    container,
    envoy_cluster_port,
    envoy_listener_port,
    envoy_validate,
    load_all,
    restricted_problems,
    strict_problems,
)

EXAMPLE = K8S / "examples" / "injected"
INJECTOR = K8S / "injector" / "base"


@pytest.fixture(scope="module")
def config() -> InjectorConfig:
    return load_injector_config(INJECTOR / "injector.yaml")


def pod_from(deployment: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The Pod a ReplicaSet creates from a Deployment's template (generateName, owner, ...)."""
    template = copy.deepcopy(deployment["spec"]["template"])
    name = deployment["metadata"]["name"]
    metadata = {
        **template.get("metadata", {}),
        "generateName": f"{name}-7c9d8b6f4d-",
        "namespace": namespace,
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"{name}-7c9d8b6f4d",
                "uid": "3e9a6c1e-8f35-4e4b-9a55-7a0a5a7d3f10",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}


def review(
    pod: dict[str, Any], uid: str = "a1b2c3d4-0000-4000-8000-000000000001"
) -> dict[str, Any]:
    pods = {"group": "", "version": "v1", "resource": "pods"}
    kind = {"group": "", "version": "v1", "kind": "Pod"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": kind,
            "resource": pods,
            "requestKind": kind,
            "requestResource": pods,
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def patched(pod: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    response = answer["response"]
    assert response["allowed"] is True, response
    if "patch" not in response:
        return copy.deepcopy(pod)
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"], validate=True))
    result: dict[str, Any] = jsonpatch.JsonPatch(ops).apply(pod, in_place=False)
    return result


@pytest.fixture(scope="module")
def example_pod() -> dict[str, Any]:
    deployment = next(d for d in load_all(EXAMPLE / "deployment.yaml") if d["kind"] == "Deployment")
    namespace = load_all(EXAMPLE / "namespace.yaml")[0]["metadata"]["name"]
    return pod_from(deployment, namespace)


@pytest.fixture(scope="module")
def injected(example_pod: dict[str, Any], config: InjectorConfig) -> dict[str, Any]:
    return patched(example_pod, mutate(review(example_pod), config, namespace_opted_in=True))


def test_the_example_pod_validates_before_and_after(
    example_pod: dict[str, Any], injected: dict[str, Any]
) -> None:
    assert strict_problems(example_pod) == []
    assert strict_problems(injected) == []
    assert restricted_problems(injected["spec"]) == []


def test_exactly_the_expected_containers_and_volumes(injected: dict[str, Any]) -> None:
    spec = injected["spec"]
    assert [c["name"] for c in spec["containers"]] == ["app", "ztauthz", "ztauthz-envoy"]
    assert spec.get("initContainers", []) == []
    assert [v["name"] for v in spec["volumes"]] == [
        "tmp",
        "ztauthz-config",
        "ztauthz-policies",
        "ztauthz-tmp",
        "ztauthz-envoy-tmp",
    ]
    assert injected["metadata"]["annotations"] == {"ztauthz.dev/status": "injected"}


def test_a_second_pass_changes_nothing(injected: dict[str, Any], config: InjectorConfig) -> None:
    for opted_in in (True, False):
        answer = mutate(review(injected), config, namespace_opted_in=opted_in)
        assert "patch" not in answer["response"]
        assert patched(injected, answer) == injected


def test_services_and_network_policy_now_reach_envoy(injected: dict[str, Any]) -> None:
    owners = {
        p["name"]: c["name"] for c in injected["spec"]["containers"] for p in c.get("ports", [])
    }
    service = load_all(EXAMPLE / "service.yaml")[0]
    assert [owners[p["targetPort"]] for p in service["spec"]["ports"]] == ["ztauthz-envoy"]
    policy = load_all(EXAMPLE / "networkpolicy.yaml")[0]
    admitted = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert [owners[name] for name in admitted] == ["ztauthz-envoy"]
    assert owners["app-http"] == "app"


def _envoy_bootstrap(pod: dict[str, Any]) -> dict[str, Any]:
    args = container(pod["spec"], "ztauthz-envoy")["args"]
    bootstrap: dict[str, Any] = yaml.safe_load(args[args.index("--config-yaml") + 1])
    return bootstrap


def test_the_injected_envoy_config_is_valid_and_points_at_the_app(
    injected: dict[str, Any], tmp_path: Path
) -> None:
    args = container(injected["spec"], "ztauthz-envoy")["args"]
    envoy_validate(*args)  # exactly the arguments the container gets (--config-yaml ...)
    bootstrap = _envoy_bootstrap(injected)
    app_port = container(injected["spec"], "app")["ports"][0]["containerPort"]
    assert envoy_cluster_port(bootstrap, "upstream") == ("127.0.0.1", app_port)
    ports = {
        p["name"]: p["containerPort"] for p in container(injected["spec"], "ztauthz-envoy")["ports"]
    }
    assert envoy_listener_port(bootstrap, "ingress")[1] == ports["http"]
    assert envoy_listener_port(bootstrap, "health")[1] == ports["envoy-health"]


@pytest.fixture
def ztauthz_env(injected: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment the injected ztauthz container runs with (and nothing else ZTAUTHZ_*)."""
    for name in list(os.environ):
        if name.startswith("ZTAUTHZ_"):
            monkeypatch.delenv(name)
    for var in container(injected["spec"], "ztauthz")["env"]:
        monkeypatch.setenv(var["name"], var["value"])
    yield


@pytest.mark.usefixtures("ztauthz_env")
def test_injected_ztauthz_with_the_namespace_config_listens_where_envoy_asks(
    injected: dict[str, Any], tmp_path: Path
) -> None:
    """The example namespace's config.yaml plus the injected environment, through the real
    settings loader: the check port is the one Envoy's ztauthz cluster names, on loopback."""
    ztauthz = container(injected["spec"], "ztauthz")
    config_file = tmp_path / "config.yaml"
    config_file.write_text((EXAMPLE / "config.yaml").read_text())
    settings = load_settings(config_file)
    assert envoy_cluster_port(_envoy_bootstrap(injected), "ztauthz") == (
        settings.server.check.host,
        settings.server.check.port,
    )
    assert settings.server.check.host == "127.0.0.1"
    admin = next(p for p in ztauthz["ports"] if p["name"] == "ztauthz-admin")
    assert admin["containerPort"] == settings.server.admin.port
    mounts = {m["name"]: m["mountPath"] for m in ztauthz["volumeMounts"]}
    assert str(settings.policies) == mounts["ztauthz-policies"]
    assert ztauthz["args"] == ["serve", "--config", f"{mounts['ztauthz-config']}/config.yaml"]
    config_maps = {
        d["name"]: d.get("files", [])
        for d in yaml.safe_load((EXAMPLE / "kustomization.yaml").read_text())["configMapGenerator"]
    }
    volumes = {v["name"]: v for v in injected["spec"]["volumes"]}
    assert config_maps[volumes["ztauthz-config"]["configMap"]["name"]] == ["config.yaml"]
    assert volumes["ztauthz-policies"]["configMap"]["name"] in config_maps


VARIANTS: list[tuple[str, dict[str, Any]]] = [
    (
        "probes, init container, annotations, volumes",
        {
            "metadata": {"annotations": {"prometheus.io/scrape": "true"}},
            "spec": {
                "initContainers": [
                    {
                        "name": "migrate",
                        "image": "registry.example.com/migrate:1",
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True,
                        },
                        "resources": {
                            "requests": {"cpu": "10m", "memory": "16Mi"},
                            "limits": {"cpu": "10m", "memory": "16Mi"},
                        },
                    }
                ],
                "containers": [
                    {
                        "name": "web",
                        "image": "registry.example.com/web:2",
                        "ports": [
                            {"name": "web", "containerPort": 3000},
                            {"name": "metrics", "containerPort": 9090},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": "web"}},
                        "livenessProbe": {"tcpSocket": {"port": 3000}},
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True,
                        },
                        "resources": {
                            "requests": {"cpu": "10m", "memory": "16Mi"},
                            "limits": {"cpu": "10m", "memory": "16Mi"},
                        },
                    }
                ],
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 1000,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            },
        },
    ),
]


@pytest.mark.parametrize("variant", [v[1] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_other_pod_shapes_validate_after_injection(
    variant: dict[str, Any], config: InjectorConfig
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "web-",
            "namespace": "shop",
            "labels": {"app": "web"},
            **variant["metadata"],
        },
        "spec": variant["spec"],
    }
    pod["metadata"]["annotations"]["ztauthz.dev/app-port"] = "web"
    assert strict_problems(pod) == []
    result = patched(pod, mutate(review(pod), config, namespace_opted_in=True))
    assert strict_problems(result) == []
    assert restricted_problems(result["spec"]) == []
    web = container(result["spec"], "web")
    assert web["readinessProbe"]["httpGet"]["port"] == "app-web"
    assert [c["name"] for c in result["spec"]["initContainers"]] == ["migrate"]
    assert result["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert patched(result, mutate(review(result), config, namespace_opted_in=True)) == result


def test_pods_that_did_not_ask_are_untouched(config: InjectorConfig) -> None:
    base = load_all(K8S / "base" / "deployment.yaml")[0]
    for pod, opted_in in (
        (pod_from(base, "ztauthz-demo"), True),  # carries its own sidecars, says "false"
        (
            pod_from(load_all(EXAMPLE / "deployment.yaml")[0], "elsewhere"),
            False,
        ),  # namespace not opted in, pod silent
    ):
        answer = mutate(review(pod), config, namespace_opted_in=opted_in)
        assert answer["response"] == {"uid": answer["response"]["uid"], "allowed": True}


# --- the API server's filter agrees with the webhook's own decision ----------------------------


def _selected_by_object_selector(entry: dict[str, Any], labels: dict[str, str]) -> bool:
    for expression in entry.get("objectSelector", {}).get("matchExpressions", []):
        value = labels.get(expression["key"])
        assert expression["operator"] == "NotIn"
        if value is not None and value in expression["values"]:
            return False
    return True


def _sent(entry: dict[str, Any], pod: dict[str, Any]) -> bool:
    """Whether the API server sends ``pod`` to ``entry`` (objectSelector, then matchConditions
    evaluated as CEL)."""
    if not _selected_by_object_selector(entry, pod["metadata"].get("labels", {})):
        return False
    return all(
        cel_evaluate(condition["expression"], {"object": pod}) is True
        for condition in entry.get("matchConditions", [])
    )


SAYS = [None, "true", "false"]


@pytest.mark.parametrize("label", SAYS)
@pytest.mark.parametrize("annotation", SAYS)
def test_webhook_filters_send_exactly_the_pods_the_injector_would_inject(
    label: str | None, annotation: str | None, config: InjectorConfig
) -> None:
    webhook = load_all(INJECTOR / "webhook.yaml")[0]
    entries = {e["clientConfig"]["service"]["path"]: e for e in webhook["webhooks"]}
    metadata: dict[str, Any] = {"generateName": "p-", "namespace": "shop"}
    if label is not None:
        metadata["labels"] = {"ztauthz.dev/inject": label}
    if annotation is not None:
        metadata["annotations"] = {"ztauthz.dev/inject": annotation}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "containers": [
                {"name": "a", "image": "a", "ports": [{"name": "http", "containerPort": 80}]}
            ]
        },
    }
    for path, opted_in in (("/inject/namespace", True), ("/inject/pod", False)):
        wants = "patch" in mutate(review(pod), config, namespace_opted_in=opted_in)["response"]
        assert _sent(entries[path], pod) == wants, (path, label, annotation)
