"""Prometheus metrics: names, closed label sets, explicit zeros, per-runtime registries."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app import __version__
from app.reasons import Reason
from app.telemetry.metrics import TOKEN_FAILURES, Metrics, StateView

ISSUER = "https://idp.example.com"


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_every_closed_label_combination_starts_at_zero() -> None:
    metrics = Metrics([ISSUER])
    found = samples(metrics)
    decisions = {k: v for k, v in found.items() if k[0] == "ztauthz_decisions_total"}
    assert len(decisions) == len(Reason) * 2  # every reason, for http and grpc
    assert set(decisions.values()) == {0.0}
    assert (
        value(
            metrics,
            "ztauthz_decisions_total",
            decision="deny",
            reason="token_expired",
            transport="grpc",
        )
        == 0.0
    )
    assert value(metrics, "ztauthz_jwks_refresh_total", issuer=ISSUER, outcome="failure") == 0
    assert value(metrics, "ztauthz_policy_reloads_total", outcome="success") == 0
    assert value(metrics, "ztauthz_decision_log_dropped_total") == 0
    for reason in ("export_failed", "unsent"):
        assert value(metrics, "ztauthz_spans_dropped_total", reason=reason) == 0
    token_reasons = {dict(k[1])["reason"] for k in found if k[0] == "ztauthz_token_failures_total"}
    assert token_reasons == {r.value for r in TOKEN_FAILURES}
    assert "token_missing" not in token_reasons and "keys_unavailable" in token_reasons


def test_observe_check_counts_decision_latency_and_token_failures() -> None:
    metrics = Metrics()
    metrics.observe_check(Reason.ALLOWED, "http", 0.0003)
    metrics.observe_check(Reason.ALLOWED, "http", 0.002)
    metrics.observe_check(Reason.TOKEN_EXPIRED, "grpc", 0.0001)
    metrics.observe_check(Reason.TOKEN_MISSING, "http", 0.0001)
    assert (
        value(
            metrics, "ztauthz_decisions_total", decision="allow", reason="allowed", transport="http"
        )
        == 2
    )
    assert (
        value(
            metrics,
            "ztauthz_decisions_total",
            decision="deny",
            reason="token_expired",
            transport="grpc",
        )
        == 1
    )
    assert value(metrics, "ztauthz_token_failures_total", reason="token_expired") == 1
    assert value(metrics, "ztauthz_token_failures_total", reason="token_missing") is None
    assert value(metrics, "ztauthz_check_duration_seconds_count", transport="http") == 3
    assert (
        value(metrics, "ztauthz_check_duration_seconds_bucket", transport="http", le="0.0005") == 2
    )


def test_an_unknown_transport_is_labelled_other() -> None:
    metrics = Metrics()
    metrics.observe_check(Reason.ALLOWED, "carrier-pigeon", 0.001)
    metrics.observe_check(Reason.ALLOWED, "carrier-pigeon", 0.001)
    assert (
        value(
            metrics,
            "ztauthz_decisions_total",
            decision="allow",
            reason="allowed",
            transport="other",
        )
        == 2
    )
    assert not any("carrier-pigeon" in str(key) for key in samples(metrics))


def test_state_gauges_are_read_at_scrape_time() -> None:
    metrics = Metrics([ISSUER])
    view = StateView("sha256:aaaa", 3, {})
    metrics.watch_state(lambda: view)
    assert value(metrics, "ztauthz_policy_rules") == 3
    assert value(metrics, "ztauthz_build_info", version=__version__, policy_version="sha256:aaaa")
    assert value(metrics, "ztauthz_jwks_key_age_seconds", issuer=ISSUER) is None  # no keys yet
    view = StateView("sha256:bbbb", 5, {ISSUER: 42.5})
    assert value(metrics, "ztauthz_policy_rules") == 5
    assert value(metrics, "ztauthz_build_info", version=__version__, policy_version="sha256:bbbb")
    assert value(metrics, "ztauthz_jwks_key_age_seconds", issuer=ISSUER) == 42.5


def test_each_runtime_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.observe_check(Reason.ALLOWED, "http", 0.001)
    first.event("config_loaded")
    assert (
        value(
            first, "ztauthz_decisions_total", decision="allow", reason="allowed", transport="http"
        )
        == 1
    )
    assert (
        value(
            second, "ztauthz_decisions_total", decision="allow", reason="allowed", transport="http"
        )
        == 0
    )
    assert value(second, "ztauthz_events_total", event="config_loaded") is None
