"""tools/container_check (``make container-check``) without an engine: what it reads (Dockerfiles,
compose config, docker events, Jaeger's traces), what it generates (the override), and that it
runs what docs/containers.md says. The check itself runs against a real engine, by hand."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.policy.loader import check_policy_dir
from app.settings import ReloadSettings, Server
from tests.deploy.deploy_support import COMPOSE, REPO
from tools.container_check import __main__ as main
from tools.container_check import walkthrough
from tools.container_check.engine import Engine, build_override
from tools.container_check.images import dockerfile_bases, image_tag, needed_images

DOCS = REPO / "docs" / "containers.md"


def engine(bridge: bool) -> Engine:
    return Engine("docker", "20.10", bridge, "2.22.0")


def compose_config() -> dict[str, Any]:
    """compose.yaml as ``docker compose config`` gives it: build contexts made absolute."""
    config: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    for service in config["services"].values():
        if "build" in service:
            service["build"]["context"] = str((COMPOSE / service["build"]["context"]).resolve())
    return config


def test_dockerfile_bases() -> None:
    assert dockerfile_bases((REPO / "Dockerfile").read_text()) == ["python:3.11-slim-bookworm"]
    text = """# comment
ARG BASE=debian:12
ARG TAG
FROM --platform=$BUILDPLATFORM ${BASE} AS one
FROM one AS two
FROM scratch
FROM node:22-alpine \\
  AS three
FROM $BASE
"""
    assert dockerfile_bases(text) == ["debian:12", "node:22-alpine"]


def test_needed_images_are_bases_and_pulled_services() -> None:
    assert needed_images(REPO, compose_config()) == [
        "python:3.11-slim-bookworm",
        "node:22-alpine",
        "registry.k8s.io/pause:3.10",
        "envoyproxy/envoy:v1.40.0",
        "otel/opentelemetry-collector-contrib:0.114.0",
        "jaegertracing/jaeger:2.1.0",
    ]


def test_the_override_exists_only_where_the_engine_needs_it() -> None:
    assert build_override(compose_config(), engine(bridge=True)) is None
    override = build_override(compose_config(), engine(bridge=False))
    assert override == {
        "services": {
            name: {"build": {"network": "host"}} for name in ("oidc", "upstream", "ztauthz")
        }
    }


def _event(service: str, action: str, seconds: float) -> dict[str, Any]:
    return {
        "Action": action,
        "timeNano": int(seconds * 1e9),
        "Actor": {"Attributes": {"com.docker.compose.service": service}},
    }


def test_health_order_from_docker_events() -> None:
    found = [
        _event("upstream", "health_status: healthy", 5.0),
        _event("oidc", "health_status: healthy", 5.5),
        _event("ztauthz", "health_status: healthy", 11.0),
        _event("envoy", "health_status: healthy", 16.0),
        _event("envoy", "health_status: healthy", 21.0),  # later probes change nothing
        _event("envoy", "start", 4.0),
    ]
    healthy = walkthrough.first_times(found, "health_status: healthy")
    assert healthy == {"upstream": 5.0, "oidc": 5.5, "ztauthz": 11.0, "envoy": 16.0}
    assert walkthrough.order_problems(healthy, walkthrough.HEALTH_ORDER) == []
    healthy["oidc"] = 12.0
    assert walkthrough.order_problems(healthy, walkthrough.HEALTH_ORDER) == [
        "ztauthz was healthy before oidc"
    ]
    del healthy["envoy"]
    assert "envoy never became healthy" in walkthrough.order_problems(
        healthy, walkthrough.HEALTH_ORDER
    )


def _span(span_id: str, process: str, name: str, parent: str | None = None) -> dict[str, Any]:
    references = [{"refType": "CHILD_OF", "spanID": parent}] if parent else []
    return {"spanID": span_id, "processID": process, "operationName": name,
            "references": references}  # fmt: skip


def test_a_ztauthz_check_span_must_descend_from_envoy() -> None:
    processes = {"p1": {"serviceName": "envoy-ingress"}, "p2": {"serviceName": "ztauthz"}}
    joined = {
        "traceID": "abc",
        "processes": processes,
        "spans": [
            _span("e1", "p1", "ingress"),
            _span("e2", "p1", "ext_authz", "e1"),
            _span("z1", "p2", "POST /check/{path:path}", "e2"),
            _span("z2", "p2", "ztauthz.check", "z1"),
        ],
    }
    apart = {
        "traceID": "def",
        "processes": processes,
        "spans": [_span("e1", "p1", "ingress"), _span("z2", "p2", "ztauthz.check")],
    }
    assert walkthrough.envoy_parented_check([apart, joined]) == "abc"
    assert walkthrough.envoy_parented_check([apart]) is None
    assert walkthrough.envoy_parented_check([]) is None


def test_the_check_follows_the_settings_defaults() -> None:
    assert Server().shutdown_grace.total_seconds() == main.DEFAULT_GRACE
    assert ReloadSettings().interval.total_seconds() == walkthrough.RELOAD_INTERVAL
    compose_ztauthz = yaml.safe_load((COMPOSE / "ztauthz.yaml").read_text())
    assert "reload" not in compose_ztauthz and "shutdown_grace" not in compose_ztauthz["server"]


def test_the_documented_policy_edits_apply_and_do_what_the_docs_say(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(COMPOSE / "policies", policies)
    path = tmp_path / walkthrough.POLICY_FILE
    original = path.read_bytes()
    assert original.count(walkthrough.POLICY_EDIT[0]) == 1
    edited = original.replace(*walkthrough.POLICY_EDIT)
    path.write_bytes(edited)
    assert [p for p in check_policy_dir(policies) if p.severity == "error"] == []
    assert edited.count(walkthrough.POLICY_BREAK[0]) == 1
    path.write_bytes(edited.replace(*walkthrough.POLICY_BREAK))
    errors = [str(p) for p in check_policy_dir(policies) if p.severity == "error"]
    assert len(errors) == 1 and "invoices.yaml:18:" in errors[0]


@pytest.mark.parametrize(
    "command",
    [
        f"docker build -t {image_tag(REPO)} \\",
        "--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges",
        f"docker run --rm {image_tag(REPO)} --help",
        "docker compose up --build --wait",
        "TOKEN=$(docker compose exec -T oidc node /demo/token.mjs invoices:read)",
        "WRITER=$(docker compose exec -T oidc node /demo/token.mjs invoices:read invoices:write)",
        "docker compose logs ztauthz",
        "docker compose down",
        "make container-check",
        "make sbom",
    ],
)
def test_the_docs_show_what_the_check_runs(command: str) -> None:
    assert command in DOCS.read_text()


def test_the_docs_show_the_policy_edits() -> None:
    docs = DOCS.read_text()
    for before, after in (walkthrough.POLICY_EDIT, walkthrough.POLICY_BREAK):
        assert before.decode() in docs and after.decode() in docs
