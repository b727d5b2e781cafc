"""deploy/compose: the compose file against the Compose Specification schema, and everything it
refers to: build contexts, mounted files, healthchecks behind every ``service_healthy``, the
ports and addresses the services' own configs use. (No Docker engine here: `docker compose
config` cannot run, so the schema comes from check-jsonschema's vendored copy of the spec.)"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from app.settings import load_settings
from tests.deploy.deploy_support import (
    COMPOSE,
    ENVOY,
    K8S,
    REPO,
    envoy_cluster_port,
    envoy_listener_port,
    load_all,
)

COMPOSE_FILE = COMPOSE / "compose.yaml"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def compose_schema() -> dict[str, Any]:
    text = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return schema


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_the_compose_file_matches_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    "mistake",
    [
        {"services": {"envoy": {"image": "e", "depends_on": {"x": {"condition": "healthy"}}}}},
        {"services": {"envoy": {"image": "e", "healthcheck": {"interval": 5}}}},
        {"services": {"envoy": {"image": "e", "volumez": []}}},
    ],
)
def test_the_schema_catches_mistakes(mistake: dict[str, Any]) -> None:
    assert schema_errors(mistake) != []


def _context(service: dict[str, Any]) -> Path:
    return (COMPOSE / str(service["build"]["context"])).resolve()


def test_build_contexts_and_dockerfiles_exist() -> None:
    built = {name: s for name, s in services().items() if "build" in s}
    assert set(built) == {"oidc", "ztauthz", "upstream"}
    for service in built.values():
        context = _context(service)
        dockerfile = (context / service["build"].get("dockerfile", "Dockerfile")).resolve()
        assert context.is_dir() and dockerfile.is_file(), service["build"]
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY ") and "--from" not in line:
                for source in line.split()[1:-1]:
                    assert (context / source).exists(), f"{dockerfile}: {source}"
    assert _context(built["ztauthz"]) == REPO


def test_mounted_files_exist() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./"), f"{name}: {volume} (only files of this directory)"
            assert (COMPOSE / source).exists(), f"{name}: {volume}"


def test_start_order_is_guarded_by_healthchecks() -> None:
    all_services = services()
    order: dict[str, set[str]] = {}
    for name, service in all_services.items():
        depends = service.get("depends_on", {})
        order[name] = set(depends)
        for target, rule in depends.items():
            assert target in all_services, f"{name} depends on unknown {target}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in all_services[target], f"{target} has no healthcheck"
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.removeprefix("service:") in depends, f"{name}: start {mode} first"
            assert "ports" not in service, f"{name}: ports belong to the namespace owner"
    # Envoy is last: it waits for ztauthz to be ready (keys loaded) and for the upstream.
    assert all_services["envoy"]["depends_on"]["ztauthz"]["condition"] == "service_healthy"
    assert all_services["envoy"]["depends_on"]["upstream"]["condition"] == "service_healthy"
    assert all_services["ztauthz"]["depends_on"]["oidc"]["condition"] == "service_healthy"
    seen: set[str] = set()
    while len(seen) < len(order):  # a topological sort: fails on a cycle
        ready = {n for n, deps in order.items() if n not in seen and deps <= seen}
        assert ready, f"depends_on cycle among {set(order) - seen}"
        seen |= ready


def test_the_stack_has_every_part_the_issue_asks_for() -> None:
    images = {name: s.get("image", "") for name, s in services().items()}
    assert images["envoy"].startswith("envoyproxy/envoy:")
    assert images["otel-collector"].startswith("otel/opentelemetry-collector")
    assert images["jaeger"].startswith("jaegertracing/")
    assert services()["ztauthz"]["build"]["dockerfile"] == "Dockerfile"
    for name, image in images.items():
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
    published = [p for s in services().values() for p in s.get("ports", [])]
    assert all(p.startswith("127.0.0.1:") for p in published), published


def test_services_are_hardened() -> None:
    for name, service in services().items():
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name


def _envoy_version() -> str:
    out = subprocess.run([str(ENVOY), "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"/(\d+\.\d+\.\d+)/", out.stdout)
    assert match, out.stdout
    return match.group(1)


def test_envoy_images_are_the_version_the_configs_are_validated_with() -> None:
    tag = f"v{_envoy_version()}"
    assert services()["envoy"]["image"] == f"envoyproxy/envoy:{tag}"
    injector = yaml.safe_load((K8S / "injector" / "base" / "injector.yaml").read_text())
    assert injector["images"]["envoy"] == f"envoyproxy/envoy:{tag}"
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert {"name": "envoyproxy/envoy", "newTag": tag} in base["images"]


def _python_port(service: dict[str, Any]) -> int:
    command = service["healthcheck"]["test"][-1]
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", command)
    assert match, command
    return int(match.group(1))


def test_ports_and_addresses_line_up(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("ZTAUTHZ_")]:
        monkeypatch.delenv(name)
    all_services = services()
    envoy = yaml.safe_load((COMPOSE / "envoy.yaml").read_text())
    settings = load_settings(COMPOSE / "ztauthz.yaml")
    # Envoy asks ztauthz where it listens; the healthcheck asks its admin listener.
    assert envoy_cluster_port(envoy, "ztauthz") == ("127.0.0.1", settings.server.check.port)
    assert _python_port(all_services["ztauthz"]) == settings.server.admin.port
    assert "/readyz" in all_services["ztauthz"]["healthcheck"]["test"][-1]
    # ... and forwards to the upstream on the port its command names.
    upstream = all_services["upstream"]["command"]
    port = int(upstream[upstream.index("--port") + 1])
    assert envoy_cluster_port(envoy, "upstream") == ("127.0.0.1", port)
    assert _python_port(all_services["upstream"]) == port
    # The namespace owner publishes Envoy's listener.
    listener = envoy_listener_port(envoy, "ingress")
    assert listener[0] == "0.0.0.0"  # noqa: S104 - inside the pod namespace; published on loopback
    assert all_services["pod"]["ports"] == [f"127.0.0.1:{listener[1]}:{listener[1]}"]
    # The issuer is the OIDC provider in the same namespace, on the port it is started with.
    oidc_dockerfile = _context(all_services["oidc"]) / all_services["oidc"]["build"]["dockerfile"]
    cmd = next(
        line
        for line in oidc_dockerfile.resolve().read_text().splitlines()
        if line.startswith("CMD")
    )
    oidc_port = int(json.loads(cmd.removeprefix("CMD "))[0])
    issuer = f"http://127.0.0.1:{oidc_port}"
    assert [i.issuer for i in settings.issuers] == [issuer]
    assert all_services["oidc"]["environment"]["OIDC_ISSUER"] == issuer
    assert (
        f"{issuer}/.well-known/openid-configuration"
        in all_services["oidc"]["healthcheck"]["test"][-1]
    )
    for service in ("envoy", "ztauthz", "upstream", "oidc"):
        assert all_services[service]["network_mode"] == "service:pod"
    # Mounted where the image's default command looks.
    mounts = dict(v.split(":")[:2] for v in all_services["ztauthz"]["volumes"])
    assert mounts["./ztauthz.yaml"] == "/etc/ztauthz/config/config.yaml"
    assert mounts["./policies"] == str(settings.policies)


def test_traces_flow_from_envoy_through_the_collector_to_jaeger() -> None:
    envoy = yaml.safe_load((COMPOSE / "envoy.yaml").read_text())
    listener = next(x for x in envoy["static_resources"]["listeners"] if x["name"] == "ingress")
    tracing = listener["filter_chains"][0]["filters"][0]["typed_config"]["tracing"]
    cluster_name = tracing["provider"]["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    host, port = envoy_cluster_port(envoy, cluster_name)
    assert host in services()
    collector = yaml.safe_load((COMPOSE / "otel-collector.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == f"0.0.0.0:{port}"
    pipeline = collector["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(collector[kind]), kind
    assert set(collector["service"]["extensions"]) <= set(collector["extensions"])
    jaeger_host = collector["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    assert jaeger_host in services()
    assert services()["jaeger"]["ports"] == ["127.0.0.1:16686:16686"]
    command = services()["otel-collector"]["command"][0]
    mounts = dict(v.split(":")[:2] for v in services()["otel-collector"]["volumes"])
    assert command == f"--config={mounts['./otel-collector.yaml']}"


def test_compose_policies_load() -> None:
    from app.policy.loader import check_policy_dir

    problems = check_policy_dir(COMPOSE / "policies")
    assert [p for p in problems if p.severity == "error"] == []
    assert load_all(COMPOSE / "policies" / "invoices.yaml")[0]["kind"] == "Policy"


# --- what a real engine showed (issue 17) ------------------------------------------------------


def _envoy_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """The envoy service's healthcheck command, as the container runs it (compose turns $$
    into $), against Envoy's admin listener on ``port``."""
    test = services()["envoy"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    command = test[3].replace("$$", "$").replace("127.0.0.1/9901", f"127.0.0.1/{port}")
    return subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture(scope="module")
def envoy_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Real Envoy (the version the compose file pins) with only its admin listener."""
    from app.dev.ports import free_port
    from app.dev.procs import HttpReady, ManagedProcess

    directory = tmp_path_factory.mktemp("envoy-admin")
    port = free_port()
    bootstrap = directory / "envoy.yaml"
    bootstrap.write_text(
        f"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}\n"
    )
    process = ManagedProcess(
        "envoy-admin",
        [str(ENVOY), "-c", str(bootstrap), "--disable-hot-restart", "--log-level", "warn"],
        log_path=directory / "envoy.log",
        ready=HttpReady(f"http://127.0.0.1:{port}/ready"),
        ready_timeout=60,
    )
    process.start()
    try:
        yield port
    finally:
        process.stop()


def test_envoy_healthcheck_passes_against_a_live_envoy(envoy_admin: int) -> None:
    result = _envoy_healthcheck(envoy_admin)
    assert result.returncode == 0, result.stderr


def test_envoy_refuses_the_http_1_0_request_the_healthcheck_once_sent(envoy_admin: int) -> None:
    """Why the healthcheck speaks HTTP/1.1: Envoy answers HTTP/1.0 with 426."""
    with socket.create_connection(("127.0.0.1", envoy_admin), timeout=5) as connection:
        connection.sendall(b"GET /ready HTTP/1.0\r\n\r\n")
        status = connection.makefile("rb").readline()
    assert status.startswith(b"HTTP/1.1 426")
    test = services()["envoy"]["healthcheck"]["test"][-1]
    assert "HTTP/1.1" in test and "HTTP/1.0" not in test


def test_envoy_healthcheck_fails_when_nothing_answers() -> None:
    from app.dev.ports import free_port

    assert _envoy_healthcheck(free_port()).returncode != 0


def test_services_depend_on_the_collector_they_export_to() -> None:
    """compose down stops dependants first: ztauthz and Envoy flush their spans before the
    collector goes, and start after it."""
    all_services = services()
    endpoints = {
        name: str(service.get("environment", {}).get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        for name, service in all_services.items()
    }
    exporters = {name for name, endpoint in endpoints.items() if "otel-collector" in endpoint}
    envoy = yaml.safe_load((COMPOSE / "envoy.yaml").read_text())
    if envoy_cluster_port(envoy, "otel_collector")[0] == "otel-collector":
        exporters.add("envoy")
    assert exporters == {"ztauthz", "envoy"}
    for name in exporters:
        assert "otel-collector" in all_services[name]["depends_on"], name


def test_the_documented_health_order_is_the_service_healthy_dependencies() -> None:
    from tools.container_check.walkthrough import HEALTH_ORDER

    edges = {
        (target, name)
        for name, service in services().items()
        for target, rule in service.get("depends_on", {}).items()
        if rule["condition"] == "service_healthy"
    }
    assert edges == set(HEALTH_ORDER)
    docs = (REPO / "docs" / "containers.md").read_text()
    assert "oidc and upstream become healthy first, then ztauthz, then envoy" in docs
