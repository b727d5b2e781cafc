"""The shipped observability configuration: Envoy with tracing, and the Collector."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from app.dev.envoy import SHIPPED_ENVOY_CONFIG, validate_envoy_config

ROOT = Path(__file__).resolve().parents[3]
ENVOY_TRACING = ROOT / "deploy" / "envoy" / "envoy-tracing.yaml"
COLLECTOR = ROOT / "deploy" / "otel" / "collector.yaml"
HCM = "envoy.filters.network.http_connection_manager"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def hcm(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = [f for f in chain["filters"] if f["name"] == HCM]
    typed: dict[str, Any] = manager["typed_config"]
    return typed


def test_envoy_tracing_is_envoy_yaml_plus_tracing_only() -> None:
    plain, traced = load(SHIPPED_ENVOY_CONFIG), load(ENVOY_TRACING)
    stripped = copy.deepcopy(traced)
    tracing = hcm(stripped).pop("tracing")
    clusters = stripped["static_resources"]["clusters"]
    (collector,) = [c for c in clusters if c["name"] == "otel_collector"]
    clusters.remove(collector)
    assert stripped == plain  # every other setting is the hardened envoy.yaml's
    provider = tracing["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    assert provider["typed_config"]["http_service"]["http_uri"]["cluster"] == "otel_collector"
    assert tracing["random_sampling"]["value"] == 100
    # The trace context reaches ztauthz: both propagation formats are allow-listed.
    allowed = {
        p["exact"]
        for f in hcm(traced)["http_filters"]
        if f["name"] == "envoy.filters.http.ext_authz"
        for p in f["typed_config"]["allowed_headers"]["patterns"]
    }
    assert {"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid"} <= allowed


def test_envoy_accepts_the_tracing_bootstrap() -> None:
    validate_envoy_config(ENVOY_TRACING)  # raises on errors and on deprecation warnings


def test_collector_pipelines_only_use_defined_components() -> None:
    config = load(COLLECTOR)
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{name}: {kind[:-1]} {component} undefined"
    used = {c for p in pipelines.values() for kind in p.values() for c in kind}
    for kind in ("receivers", "processors", "exporters"):
        assert set(config[kind]) <= used, f"unused {kind}"
    assert set(config["service"]["extensions"]) == set(config["extensions"])
    # Traces from ztauthz (OTLP/HTTP) and Envoy (OTLP/gRPC) are scrubbed before export.
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert "transform/scrub" in pipelines["traces"]["processors"]
