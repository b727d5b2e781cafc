"""Every Kubernetes manifest: strict schema validation on two minor versions, the restricted
profile, and the references between objects (Service -> Envoy port, webhook -> injector)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.routing import Route

from app.injector.config import load_injector_config
from app.injector.server import create_injector_app
from app.settings import load_settings
from tests.deploy.deploy_support import (
    ISTIO,
    K8S,
    KUSTOMIZATIONS,
    by_kind,
    container,
    envoy_cluster_port,
    envoy_listener_port,
    is_custom,
    kustomize,
    load_all,
    one,
    pod_specs,
    restricted_problems,
    strict_problems,
)

NOT_MANIFESTS = {"Kustomization", "Policy"}  # kustomize's own file; ztauthz policies


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ZTAUTHZ_* variables from the test environment leak into load_settings."""
    for name in list(os.environ):
        if name.startswith("ZTAUTHZ_"):
            monkeypatch.delenv(name)
    yield


def manifest_files() -> list[Path]:
    """Every YAML file under deploy/k8s and deploy/istio holding Kubernetes objects."""
    files = []
    for path in sorted([*K8S.rglob("*.yaml"), *ISTIO.rglob("*.yaml")]):
        docs = load_all(path)
        is_manifest = docs and all("apiVersion" in d and "kind" in d for d in docs)
        if is_manifest and not any(d["kind"] in NOT_MANIFESTS for d in docs):
            files.append(path)
    return files


def test_the_manifest_set_is_what_we_expect() -> None:
    names = {str(p.relative_to(K8S.parent)) for p in manifest_files()}
    # A new manifest is picked up automatically; this guards against the filter missing some.
    assert len(names) >= 25
    assert "k8s/injector/base/webhook.yaml" in names
    assert "istio/mesh-config.yaml" in names


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S.parent)))
def test_every_manifest_file_validates_strictly(path: Path) -> None:
    problems = [p for obj in load_all(path) for p in strict_problems(obj)]
    assert problems == []


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_rendered_kustomization_validates_strictly(name: str) -> None:
    objects = kustomize(KUSTOMIZATIONS[name])
    assert objects
    problems = [p for obj in objects for p in strict_problems(obj)]
    assert problems == []


def test_strict_validation_does_catch_a_mistake() -> None:
    service = load_all(K8S / "base" / "service.yaml")[0]
    service["spec"]["ports"][0]["targetPortt"] = "http"
    assert any("targetPortt" in p for p in strict_problems(service))
    deployment = load_all(K8S / "base" / "deployment.yaml")[0]
    deployment["spec"]["replicas"] = "two"
    assert len(strict_problems(deployment)) == 2  # once per version


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_pod_meets_the_restricted_profile(name: str) -> None:
    specs = pod_specs(kustomize(KUSTOMIZATIONS[name]))
    problems = [f"{pod}: {p}" for pod, spec in specs for p in restricted_problems(spec)]
    assert problems == []


def test_restricted_check_does_catch_a_mistake() -> None:
    spec = load_all(K8S / "base" / "deployment.yaml")[0]["spec"]["template"]["spec"]
    spec["containers"][1]["securityContext"]["readOnlyRootFilesystem"] = False
    del spec["containers"][2]["resources"]["limits"]
    assert restricted_problems(spec) == [
        "ztauthz: root filesystem is writable",
        "envoy: no limits.cpu",
        "envoy: no limits.memory",
    ]


CONFIGS = [
    K8S / "base" / "config.yaml",
    K8S / "examples" / "injected" / "config.yaml",
    ISTIO / "config.yaml",
]
POLICY_DIRS = [
    K8S / "base" / "policies",
    K8S / "examples" / "injected" / "policies",
    ISTIO / "policies",
]


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(K8S.parent)))
def test_shipped_ztauthz_configs_load(path: Path) -> None:
    settings = load_settings(path)
    assert str(settings.policies) == "/etc/ztauthz/policies"
    assert all(i.issuer.startswith("https://") for i in settings.issuers)


@pytest.mark.parametrize("path", POLICY_DIRS, ids=lambda p: str(p.relative_to(K8S.parent)))
def test_shipped_policies_load(path: Path) -> None:
    from app.policy.loader import check_policy_dir

    assert [str(p) for p in check_policy_dir(path) if p.severity == "error"] == []


# --- the sidecar workload (Kustomize base) -----------------------------------------------------


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize(KUSTOMIZATIONS["k8s/base"])


def _config_map_data(objects: list[dict[str, Any]], volume: dict[str, Any]) -> dict[str, str]:
    name = volume["configMap"]["name"]
    data: dict[str, str] = one(objects, "ConfigMap", name)["data"]
    return data


def test_base_service_and_network_policy_reach_envoy_alone(base: list[dict[str, Any]]) -> None:
    spec = one(base, "Deployment")["spec"]["template"]["spec"]
    owners = {p["name"]: c["name"] for c in spec["containers"] for p in c.get("ports", [])}
    envoy_ports = {p["name"]: p["containerPort"] for p in container(spec, "envoy")["ports"]}
    service_ports = one(base, "Service")["spec"]["ports"]
    assert [owners[p["targetPort"]] for p in service_ports] == ["envoy"]
    policy = one(base, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    admitted = [port["port"] for rule in policy["ingress"] for port in rule["ports"]]
    assert admitted == ["http"] and owners["http"] == "envoy"
    envoy_yaml = yaml.safe_load(
        _config_map_data(base, next(v for v in spec["volumes"] if v["name"] == "envoy-config"))[
            "envoy.yaml"
        ]
    )
    any_address = "0.0.0.0"  # noqa: S104 - the pod IP: Envoy is the pod's front door
    assert envoy_listener_port(envoy_yaml, "ingress") == (any_address, envoy_ports["http"])
    assert envoy_listener_port(envoy_yaml, "health") == (any_address, envoy_ports["envoy-health"])


@pytest.mark.usefixtures("clean_env")
def test_base_pod_wires_envoy_to_ztauthz_and_the_app_over_loopback(
    base: list[dict[str, Any]], tmp_path: Path
) -> None:
    spec = one(base, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    envoy_yaml = yaml.safe_load(_config_map_data(base, volumes["envoy-config"])["envoy.yaml"])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(_config_map_data(base, volumes["ztauthz-config"])["config.yaml"])
    settings = load_settings(config_file)
    assert envoy_cluster_port(envoy_yaml, "ztauthz") == ("127.0.0.1", settings.server.check.port)
    assert settings.server.check.host == "127.0.0.1"
    ztauthz = container(spec, "ztauthz")
    admin_port = next(p for p in ztauthz["ports"] if p["name"] == "ztauthz-admin")
    assert admin_port["containerPort"] == settings.server.admin.port
    assert ztauthz["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ztauthz-admin"}
    assert ztauthz["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ztauthz-admin"}
    mounts = {m["mountPath"]: m["name"] for m in ztauthz["volumeMounts"]}
    assert mounts[str(settings.policies)] == "ztauthz-policies"
    assert "config.yaml" in ztauthz["args"][-1]
    app = container(spec, "app")
    assert app["args"][app["args"].index("--host") + 1] == "127.0.0.1"
    app_port = int(app["args"][app["args"].index("--port") + 1])
    assert envoy_cluster_port(envoy_yaml, "upstream") == ("127.0.0.1", app_port)


def test_base_policies_come_from_a_config_map_and_validate(base: list[dict[str, Any]]) -> None:
    from app.policy.loader import load_policy_dir

    spec = one(base, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    data = _config_map_data(base, volumes["ztauthz-policies"])
    assert set(data) == {"demo.yaml"}
    assert load_policy_dir(K8S / "base" / "policies").rule_count == 3


def test_the_injector_template_is_the_base_envoy_config() -> None:
    assert (K8S / "base" / "envoy.yaml").read_bytes() == (
        K8S / "injector" / "base" / "envoy.yaml"
    ).read_bytes()


# --- the injector ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def injector() -> list[dict[str, Any]]:
    return kustomize(KUSTOMIZATIONS["k8s/injector/base"])


def test_webhook_entries_fail_closed_and_reach_the_injector(
    injector: list[dict[str, Any]],
) -> None:
    webhook = one(injector, "MutatingWebhookConfiguration")
    service = one(injector, "Service", "ztauthz-injector")
    deployment = one(injector, "Deployment", "ztauthz-injector")
    entries = webhook["webhooks"]
    assert [e["name"] for e in entries] == [
        "namespace.inject.ztauthz.dev",
        "pod.inject.ztauthz.dev",
    ]
    for entry in entries:
        assert entry["failurePolicy"] == "Fail"
        assert entry["sideEffects"] == "None"
        assert entry["admissionReviewVersions"] == ["v1"]
        assert entry["rules"] == [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        target = entry["clientConfig"]["service"]
        assert (target["name"], target["namespace"]) == (
            service["metadata"]["name"],
            service["metadata"]["namespace"],
        )
        assert target["port"] in [p["port"] for p in service["spec"]["ports"]]
        excluded = next(
            e
            for e in entry["namespaceSelector"]["matchExpressions"]
            if e["key"] == "kubernetes.io/metadata.name"
        )
        assert excluded["operator"] == "NotIn"
        assert {"kube-system", deployment["metadata"]["namespace"]} <= set(excluded["values"])
    served = {e["clientConfig"]["service"]["path"] for e in entries}
    assert served == {"/inject/namespace", "/inject/pod"}


def test_webhook_paths_are_post_routes_of_the_injector_server(
    injector: list[dict[str, Any]],
) -> None:
    app = create_injector_app(load_injector_config(K8S / "injector" / "base" / "injector.yaml"))
    routes = {r.path: r.methods for r in app.routes if isinstance(r, Route)}
    webhook = one(injector, "MutatingWebhookConfiguration")
    for entry in webhook["webhooks"]:
        methods = routes[entry["clientConfig"]["service"]["path"]]
        assert methods is not None and "POST" in methods


def test_injector_deployment_serves_the_mounted_certificate_and_config(
    injector: list[dict[str, Any]],
) -> None:
    deployment = one(injector, "Deployment", "ztauthz-injector")
    spec = deployment["spec"]["template"]["spec"]
    c = container(spec, "injector")
    args = c["args"]
    assert args[:2] == ["injector", "serve"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert args[args.index("--cert") + 1] == f"{mounts['tls']}/tls.crt"
    assert args[args.index("--key") + 1] == f"{mounts['tls']}/tls.key"
    assert volumes["tls"]["secret"]["secretName"] == "ztauthz-injector-tls"
    config_path = Path(args[args.index("--config") + 1])
    assert config_path.parent == Path(mounts["config"])
    data = one(injector, "ConfigMap", volumes["config"]["configMap"]["name"])["data"]
    assert set(data) == {config_path.name, "envoy.yaml"}
    port = next(p for p in c["ports"] if p["name"] == "webhook")["containerPort"]
    assert args[args.index("--port") + 1] == str(port)
    assert c["readinessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "webhook",
        "scheme": "HTTPS",
    }
    assert one(injector, "Service")["spec"]["ports"][0]["targetPort"] == "webhook"
    assert spec["securityContext"]["fsGroup"] == c["securityContext"]["runAsGroup"]


def test_cert_manager_overlay_issues_the_secret_and_injects_the_ca() -> None:
    objects = kustomize(KUSTOMIZATIONS["k8s/injector/cert-manager"])
    webhook = one(objects, "MutatingWebhookConfiguration")
    namespace, name = webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].split(
        "/"
    )
    ca = one(objects, "Certificate", name)
    assert ca["metadata"]["namespace"] == namespace and ca["spec"]["isCA"] is True
    serving = one(objects, "Certificate", "ztauthz-injector")
    deployment = one(objects, "Deployment", "ztauthz-injector")
    secret = next(
        v["secret"]["secretName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    )
    assert serving["spec"]["secretName"] == secret
    service = one(objects, "Service", "ztauthz-injector")
    svc_name = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert svc_name in serving["spec"]["dnsNames"]
    assert "server auth" in serving["spec"]["usages"]
    issuers = {i["metadata"]["name"]: i for i in by_kind(objects, "Issuer")}
    for certificate in (ca, serving):
        ref = certificate["spec"]["issuerRef"]
        assert ref["kind"] == "Issuer" and ref["name"] in issuers
    assert (
        issuers[serving["spec"]["issuerRef"]["name"]]["spec"]["ca"]["secretName"]
        == ca["spec"]["secretName"]
    )
    assert all(o["metadata"].get("namespace") == namespace for o in objects if is_custom(o))


# --- Istio -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_istio_provider_policy_and_service_agree(tmp_path: Path) -> None:
    objects = kustomize(KUSTOMIZATIONS["istio"])
    operator = load_all(ISTIO / "mesh-config.yaml")[0]
    providers = operator["spec"]["meshConfig"]["extensionProviders"]
    helm = yaml.safe_load((ISTIO / "istiod-values.yaml").read_text())
    assert helm["meshConfig"]["extensionProviders"] == providers
    policy = one(objects, "AuthorizationPolicy")
    assert policy["spec"]["action"] == "CUSTOM"
    provider = next(p for p in providers if p["name"] == policy["spec"]["provider"]["name"])
    authz = provider["envoyExtAuthzHttp"]
    assert authz["failOpen"] is False
    assert "x-auth-*" in authz["headersToUpstreamOnAllow"]
    assert {"authorization", "cookie"} <= set(authz["includeRequestHeadersInCheck"])
    assert {"www-authenticate", "x-auth-decision-id"} <= set(authz["headersToDownstreamOnDeny"])
    service = one(objects, "Service", "ztauthz")
    fqdn = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert authz["service"] == fqdn
    assert authz["port"] in [p["port"] for p in service["spec"]["ports"]]
    peer = one(objects, "PeerAuthentication")
    assert peer["spec"]["mtls"]["mode"] == "STRICT"
    config = one(objects, "ConfigMap", _generated(objects, "ztauthz-config"))
    file = tmp_path / "config.yaml"
    file.write_text(config["data"]["config.yaml"])
    settings = load_settings(file)
    assert authz["pathPrefix"] == settings.server.check.path_prefix
    check = next(p for p in service["spec"]["ports"] if p["port"] == authz["port"])["targetPort"]
    ports = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert (
        next(p for p in ports if p["name"] == check)["containerPort"] == settings.server.check.port
    )


def _generated(objects: list[dict[str, Any]], prefix: str) -> str:
    names: list[str] = [o["metadata"]["name"] for o in by_kind(objects, "ConfigMap")]
    found = [n for n in names if n.startswith(prefix + "-")]
    assert len(found) == 1, names
    return found[0]
