"""Metrics of continuous access evaluation (app/signals/), in the runtime's registry.

Label values come from closed sets: event types (app/signals/events.py ``EventType``),
RFC 8935 error codes, transmitter names from the configuration and reason codes.

- ``ztauthz_signals_events_received_total{transmitter,type}``: SETs received (push or poll)
  whose type could be read; ``type="unreadable"`` for those that could not;
- ``ztauthz_signals_events_applied_total{transmitter,type}``: events that changed the view;
- ``ztauthz_signals_events_rejected_total{transmitter,error}``: refused, by RFC 8935 code
  (``unavailable``: answered 503, to be delivered again);
- ``ztauthz_signals_refusals_total{reason}``: decisions refused because of an event or the
  kill switch (read at scrape time from the decision counts);
- ``ztauthz_signals_propagation_seconds``: from the replica that applied a record to this one
  (measured on records heard from the store that were new here);
- ``ztauthz_signals_store_up``, ``ztauthz_signals_records``, ``ztauthz_signals_pending``:
  read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from app.reasons import Reason
from app.telemetry.metrics import CheckCounts

SIGNAL_REASONS: Final = (
    Reason.SESSION_REVOKED,
    Reason.ACCOUNT_DISABLED,
    Reason.CREDENTIAL_CHANGED,
    Reason.CREDENTIAL_CHANGE_REQUIRED,
    Reason.ACCESS_REVOKED,
    Reason.DEVICE_NONCOMPLIANT,
    Reason.DEVICE_REVOKED,
)
PROPAGATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class SignalsView:
    store_up: bool | None
    records: int
    pending: int


class SignalMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        checks: CheckCounts,
        transmitters: Sequence[str] = (),
    ) -> None:
        self.received = Counter(
            "ztauthz_signals_events_received",
            "Security events received (push or poll), by transmitter and event type.",
            ["transmitter", "type"],
            registry=registry,
        )
        self.applied = Counter(
            "ztauthz_signals_events_applied",
            "Security events that changed the revocation view, by transmitter and event type.",
            ["transmitter", "type"],
            registry=registry,
        )
        self.rejected = Counter(
            "ztauthz_signals_events_rejected",
            "Security events refused (nothing changed), by transmitter and RFC 8935 error code.",
            ["transmitter", "error"],
            registry=registry,
        )
        self.propagation = Histogram(
            "ztauthz_signals_propagation_seconds",
            "Seconds from the replica that applied a revocation record to this replica.",
            buckets=PROPAGATION_BUCKETS,
            registry=registry,
        )
        for name in transmitters:
            self.rejected.labels(name, "invalid_request")
        registry.register(_Refusals(checks))
        self._view: Callable[[], SignalsView] | None = None
        registry.register(_State(lambda: None if self._view is None else self._view()))

    def watch(self, view: Callable[[], SignalsView]) -> None:
        self._view = view


class _Refusals:
    def __init__(self, checks: CheckCounts) -> None:
        self._checks = checks

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        counts = dict.fromkeys(SIGNAL_REASONS, 0)
        for (reason, _), count in list(self._checks.decisions.items()):
            if reason in counts:
                counts[reason] += count
        for reason, count in counts.items():
            family.add_metric([reason.value], count)
        return [family]

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "ztauthz_signals_refusals",
            "Checks refused because of a security event or the kill switch, by reason code.",
            labels=["reason"],
        )


class _State:
    def __init__(self, view: Callable[[], SignalsView | None]) -> None:
        self._view = view

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._view())

    @staticmethod
    def _families(view: SignalsView | None) -> list[Metric]:
        up = GaugeMetricFamily(
            "ztauthz_signals_store_up",
            "1 when the shared store answered last time, 0 when it did not (absent before).",
        )
        records = GaugeMetricFamily(
            "ztauthz_signals_records", "Live revocation records in this replica's view."
        )
        pending = GaugeMetricFamily(
            "ztauthz_signals_pending", "Records applied here that wait to be written to the store."
        )
        if view is not None:
            if view.store_up is not None:
                up.add_metric([], 1 if view.store_up else 0)
            records.add_metric([], view.records)
            pending.add_metric([], view.pending)
        return [up, records, pending]
