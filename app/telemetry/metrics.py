"""Prometheus metrics of one Runtime, in its own registry (no process-global state).

Every label value comes from a closed set: decisions, reason codes, transports, configured issuer
URLs, outcomes and event names. Never a subject, a path or anything else a client chooses.
The series of the closed sets are created up front, so a scrape shows explicit zeros.

The per-check work is a few integer increments in plain dicts (``CheckCounts``), turned into
metric families at scrape time.
Gauges about the current state (compiled rules, key age, build info) are computed at scrape
time by a collector, so nothing has to remember to update them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from app import __version__
from app.identity.introspection import OUTCOMES as INTROSPECTION_OUTCOMES
from app.identity.token_cache import CacheStats
from app.reasons import Reason, status_of
from app.telemetry.span_export import DROP_REASONS

TRANSPORTS: Final = ("http", "grpc")
OTHER: Final = "other"
OUTCOMES: Final = ("success", "failure")
# Shared-store operations whose failures are counted (app/store/health.py callers).
STORE_OPERATIONS: Final = ("dpop_replay", "ping")
# Sub-millisecond is the normal case (keys cached, CPU only); the tail shows up in the top buckets.
DURATION_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
# One question to an introspection endpoint: a local round trip to seconds (its timeout).
INTROSPECTION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Failures of token verification: every token_* code except "there was no token at all".
TOKEN_FAILURES: Final = frozenset(
    r for r in Reason if r.value.startswith("token_") and r is not Reason.TOKEN_MISSING
) | {Reason.KEYS_UNAVAILABLE, Reason.INTROSPECTION_UNAVAILABLE}


def decision_label(reason: Reason) -> str:
    return "allow" if status_of(reason) == 200 else "deny"


def transport_label(transport: str) -> str:
    return transport if transport in TRANSPORTS else OTHER


@dataclass(frozen=True, slots=True)
class StateView:
    """What the state gauges read at scrape time."""

    policy_version: str
    rules: int
    key_ages: Mapping[str, float]  # issuer -> seconds since its keys were last fetched


T = TypeVar("T")


class _ScrapeTimeCollector(Generic[T]):
    """Metric families computed at scrape time from ``view()``; ``families(None)`` describes
    them without reading anything."""

    def __init__(self, view: Callable[[], T], families: Callable[[T | None], list[Metric]]) -> None:
        self._view = view
        self._families = families

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._view())


def _state_families(view: StateView | None) -> list[Metric]:
    rules = GaugeMetricFamily(
        "ztauthz_policy_rules", "Compiled policy rules in the active policy set."
    )
    info = GaugeMetricFamily(
        "ztauthz_build_info",
        "Always 1; the labels name the running version and the active policy version.",
        labels=["version", "policy_version"],
    )
    age = GaugeMetricFamily(
        "ztauthz_jwks_key_age_seconds",
        "Seconds since the issuer's signing keys were last fetched successfully "
        "(absent until the first success).",
        labels=["issuer"],
    )
    if view is not None:
        rules.add_metric([], view.rules)
        info.add_metric([__version__, view.policy_version], 1)
        for issuer, seconds in sorted(view.key_ages.items()):
            age.add_metric([issuer], max(0.0, seconds))
    return [rules, info, age]


def _assertion_families(counts: tuple[int, int] | None) -> list[Metric]:
    """The signed identity assertion's counters, read at scrape time (app/assertion/ counts
    with plain integers on the check path)."""
    handed = CounterMetricFamily(
        "ztauthz_assertions",
        "Signed identity assertions handed to upstreams, by result: signed for this allow, or "
        "reused (identical claims, signed by an earlier allow, more than half its lifetime left).",
        labels=["result"],
    )
    if counts is not None:
        signed, reused = counts
        handed.add_metric(["signed"], signed)
        handed.add_metric(["reused"], reused)
    return [handed]


def _token_cache_families(stats: CacheStats | None) -> list[Metric]:
    """The verified-token cache's counters, read from the cache at scrape time (the cache
    counts with plain integers: nothing is locked on the check path)."""
    entries = GaugeMetricFamily(
        "ztauthz_token_cache_entries", "Verified tokens remembered (by digest) right now."
    )
    capacity = GaugeMetricFamily(
        "ztauthz_token_cache_capacity", "The most verified tokens remembered at once."
    )
    lookups = CounterMetricFamily(
        "ztauthz_token_cache_lookups",
        "Token cache lookups, by result: hit (the signature was not checked again) or miss.",
        labels=["result"],
    )
    evictions = CounterMetricFamily(
        "ztauthz_token_cache_evictions",
        "Remembered tokens pushed out by newer ones (least recently used first).",
    )
    if stats is not None:
        entries.add_metric([], stats.entries)
        capacity.add_metric([], stats.capacity)
        lookups.add_metric(["hit"], stats.hits)
        lookups.add_metric(["miss"], stats.misses)
        evictions.add_metric([], stats.evictions)
    return [entries, capacity, lookups, evictions]


def _store_families(view: tuple[str, bool] | None) -> list[Metric]:
    up = GaugeMetricFamily(
        "ztauthz_store_up",
        "1 when the shared store (DPoP replay cache, revocations) answers, else 0.",
        labels=["backend"],
    )
    if view is not None:
        up.add_metric([view[0]], 1 if view[1] else 0)
    return [up]


def _introspection_cache_families(stats: CacheStats | None) -> list[Metric]:
    entries = GaugeMetricFamily(
        "ztauthz_introspection_cache_entries",
        "Introspection answers remembered (by token digest) right now, across issuers.",
    )
    if stats is not None:
        entries.add_metric([], stats.entries)
    return [entries]


class CheckCounts:
    """Decisions by (reason, transport) and check durations by transport, counted with plain
    integers from the event loop that runs the checks, read at scrape time."""

    def __init__(self) -> None:
        self.decisions: dict[tuple[Reason, str], int] = {
            (reason, transport): 0 for transport in TRANSPORTS for reason in Reason
        }
        # per transport label: a count per bucket (the last one is +Inf), and the sum
        self.buckets: dict[str, list[int]] = {
            label: [0] * (len(DURATION_BUCKETS) + 1) for label in (*TRANSPORTS, OTHER)
        }
        self.sums: dict[str, float] = dict.fromkeys((*TRANSPORTS, OTHER), 0.0)

    def observe(self, reason: Reason, transport: str, seconds: float) -> None:
        label = transport_label(transport)
        key = (reason, label)
        self.decisions[key] = self.decisions.get(key, 0) + 1
        self.buckets[label][bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.sums[label] += seconds


def _check_families(counts: CheckCounts | None) -> list[Metric]:
    decisions = CounterMetricFamily(
        "ztauthz_decisions",
        "Checks decided, by decision, reason code and transport.",
        labels=["decision", "reason", "transport"],
    )
    duration = HistogramMetricFamily(
        "ztauthz_check_duration_seconds",
        "Time to decide one check, from the transport's call to the decision.",
        labels=["transport"],
    )
    failures = CounterMetricFamily(
        "ztauthz_token_failures",
        "Tokens refused by verification, by reason code.",
        labels=["reason"],
    )
    if counts is None:
        return [decisions, duration, failures]
    by_failure = dict.fromkeys(sorted(TOKEN_FAILURES, key=lambda r: r.value), 0)
    for (reason, label), count in list(counts.decisions.items()):
        decisions.add_metric([decision_label(reason), reason.value, label], count)
        if reason in by_failure:
            by_failure[reason] += count
    for reason, count in by_failure.items():
        failures.add_metric([reason.value], count)
    for label, per_bucket in counts.buckets.items():
        if label == OTHER and not any(per_bucket):
            continue  # only when some transport outside the closed set was seen
        cumulative, total = [], 0
        for bound, count in zip((*map(str, DURATION_BUCKETS), "+Inf"), per_bucket, strict=True):
            total += count
            cumulative.append((bound, total))
        duration.add_metric([label], cumulative, counts.sums[label])
    return [decisions, duration, failures]


class Metrics:
    """The instruments. ``registry`` is what /metrics exposes."""

    def __init__(
        self,
        issuers: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
        introspecting: Sequence[str] = (),
    ):
        """``issuers``: every configured issuer; ``introspecting``: those with introspection."""
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # Per check: plain integers, turned into families at scrape time (no lock, no label
        # lookup on the check path; checks all run on the one event loop).
        self.checks = CheckCounts()
        r.register(_ScrapeTimeCollector(lambda: self.checks, _check_families))
        self.jwks_refreshes = Counter(
            "ztauthz_jwks_refresh",
            "JWKS fetches, by issuer and outcome (success, failure).",
            ["issuer", "outcome"],
            registry=r,
        )
        self.policy_reloads = Counter(
            "ztauthz_policy_reloads",
            "Policy reloads, by outcome (success, failure: the previous policies stay).",
            ["outcome"],
            registry=r,
        )
        self.decision_log_dropped = Counter(
            "ztauthz_decision_log_dropped",
            "Decision log lines dropped because the writer queue was full or writing failed.",
            registry=r,
        )
        self.spans_dropped_total = Counter(
            "ztauthz_spans_dropped",
            "Spans not sent to the collector, by reason (export_failed: the exporter gave up on "
            "the batch; unsent: still queued at shutdown when the grace ran out, or pushed out "
            "of a full queue).",
            ["reason"],
            registry=r,
        )
        self.events = Counter(
            "ztauthz_events",
            "Discrete changes (configuration loaded, keys rotated, ...), by event name.",
            ["event"],
            registry=r,
        )
        self.store_failures = Counter(
            "ztauthz_store_failures",
            "Shared-store operations that failed (the request needing them was refused), "
            "by operation.",
            ["operation"],
            registry=r,
        )
        for operation in STORE_OPERATIONS:
            self.store_failures.labels(operation)
        self.introspections = Counter(
            "ztauthz_introspections",
            "Token introspections (RFC 7662), by issuer and outcome: active, inactive, refused "
            "(active but its claims refused), error (no usable answer), overloaded (too many in "
            "flight), cached (answered from the cache), coalesced (joined one in flight).",
            ["issuer", "outcome"],
            registry=r,
        )
        self.introspection_duration = Histogram(
            "ztauthz_introspection_duration_seconds",
            "Time for one question to an introspection endpoint, answered or failed.",
            ["issuer"],
            buckets=INTROSPECTION_BUCKETS,
            registry=r,
        )
        for issuer in issuers:
            for outcome in OUTCOMES:
                self.jwks_refreshes.labels(issuer, outcome)
        for issuer in introspecting:
            self.introspection_duration.labels(issuer)
            for introspection_outcome in INTROSPECTION_OUTCOMES:
                self.introspections.labels(issuer, introspection_outcome)
        for outcome in OUTCOMES:
            self.policy_reloads.labels(outcome)
        for reason in DROP_REASONS:
            self.spans_dropped_total.labels(reason)

    def observe_check(self, reason: Reason, transport: str, seconds: float) -> None:
        self.checks.observe(reason, transport, seconds)

    def jwks_refreshed(self, issuer: str, ok: bool) -> None:
        self.jwks_refreshes.labels(issuer, OUTCOMES[0] if ok else OUTCOMES[1]).inc()

    def spans_dropped(self, reason: str, count: int) -> None:
        self.spans_dropped_total.labels(reason).inc(count)

    def introspected(self, issuer: str, outcome: str, seconds: float | None) -> None:
        self.introspections.labels(issuer, outcome).inc()
        if seconds is not None:
            self.introspection_duration.labels(issuer).observe(seconds)

    def event(self, name: str) -> None:
        self.events.labels(name).inc()

    def watch_state(self, view: Callable[[], StateView]) -> None:
        """Expose the gauges computed from ``view`` (called at every scrape)."""
        self.registry.register(_ScrapeTimeCollector(view, _state_families))

    def watch_store(self, view: Callable[[], tuple[str, bool]]) -> None:
        """Expose ``ztauthz_store_up{backend}`` from ``view() -> (backend, up)``."""
        self.registry.register(_ScrapeTimeCollector(view, _store_families))

    def watch_introspection_cache(self, view: Callable[[], CacheStats]) -> None:
        """Expose the introspection answer cache's size (``view`` at every scrape)."""
        self.registry.register(_ScrapeTimeCollector(view, _introspection_cache_families))

    def watch_token_cache(self, view: Callable[[], CacheStats]) -> None:
        """Expose the verified-token cache's size and counters (``view`` at every scrape)."""
        self.registry.register(_ScrapeTimeCollector(view, _token_cache_families))

    def watch_assertions(self, view: Callable[[], tuple[int, int]]) -> None:
        """Expose how many assertions were signed and reused (``view`` at every scrape)."""
        self.registry.register(_ScrapeTimeCollector(view, _assertion_families))
