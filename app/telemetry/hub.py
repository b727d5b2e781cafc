"""Telemetry of one Runtime: metrics, traces, the decision log and events, behind two calls per
check (``begin_check`` / ``end_check``, made by app/check.py for every transport).

Per check, with tracing off: a contextvar set and reset, one decision-log line formatted and
queued (the caller's trace id read from the request headers), two counter increments and a
histogram observation. With tracing on, the ``ztauthz.check`` span
is added.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import Token
from typing import TextIO

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from app.decision import Decision
from app.identity.introspection import ERROR as INTROSPECTION_ERROR
from app.identity.introspection import IntrospectionOutcome
from app.identity.jwks import RefreshOutcome
from app.policy.index import CompiledPolicies
from app.reasons import Reason, status_of
from app.request import RequestContext
from app.settings import Settings
from app.telemetry.decision_log import DecisionLog
from app.telemetry.events import Event, Events
from app.telemetry.fields import client_ip, path_only, split_host
from app.telemetry.logging import Correlation, bind, unbind
from app.telemetry.metrics import Metrics, StateView
from app.telemetry.subject import SubjectView, load_subject_key, subject_view
from app.telemetry.tracing import CHECK_SPAN, Tracing


class CheckScope:
    """What ``begin_check`` started and ``end_check`` finishes (one per check)."""

    __slots__ = ("correlation", "decision_id", "otel_token", "span", "span_id", "trace_id")

    def __init__(
        self,
        decision_id: str,
        span: Span | None,
        trace_id: int | None,
        span_id: int | None,
        otel_token: Token[Context] | None,
        correlation: Token[Correlation | None],
    ) -> None:
        self.decision_id = decision_id
        self.span = span
        self.trace_id = trace_id
        self.span_id = span_id
        self.otel_token = otel_token
        self.correlation = correlation


def request_attributes(ctx: RequestContext) -> dict[str, AttributeValue]:
    """Span attributes (OpenTelemetry semantic conventions) of the request being authorized."""
    host, port = split_host(ctx.host)
    attributes: dict[str, AttributeValue] = {
        "http.request.method": ctx.method,
        "url.path": path_only(ctx.path),
        "server.address": host,
        "ztauthz.transport": ctx.transport,
    }
    if port is not None:
        attributes["server.port"] = port
    address = client_ip(ctx)
    if address is not None:
        attributes["client.address"] = address
    return attributes


def decision_attributes(
    decision: Decision | None, reason: Reason, decision_id: str, subject: SubjectView
) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        "ztauthz.decision": "allow" if decision is not None and decision.allow else "deny",
        "ztauthz.reason": reason.value,
        "ztauthz.decision_id": decision_id,
        "http.response.status_code": status_of(reason),
    }
    if decision is None:
        return attributes
    attributes["ztauthz.policy_version"] = decision.policy_version
    if decision.rule_id is not None:
        attributes["ztauthz.rule"] = decision.rule_id
    if decision.policy is not None:
        attributes["ztauthz.policy"] = decision.policy
    if decision.principal is not None:
        attributes["enduser.id"] = subject(decision.principal.subject)
        attributes["ztauthz.issuer"] = decision.principal.issuer
    if decision.grants:
        attributes["ztauthz.grants"] = list(decision.grants)
    if decision.dry_run is not None:
        attributes["ztauthz.dry_run.decision"] = "allow" if decision.dry_run.allow else "deny"
        attributes["ztauthz.dry_run.reason"] = decision.dry_run.reason.value
        if decision.dry_run.rule_id is not None:
            attributes["ztauthz.dry_run.rule"] = decision.dry_run.rule_id
    return attributes


class Telemetry:
    def __init__(
        self,
        *,
        metrics: Metrics,
        tracing: Tracing,
        decision_log: DecisionLog,
        subject: SubjectView,
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.decision_log = decision_log
        self.subject = subject
        self.events = Events(metrics, subject)
        self._tracer = tracing.tracer
        self._propagator = tracing.propagator
        self._key_fetched_at: dict[str, float] = {}

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        tracing: Tracing | None = None,
        stream: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Telemetry:
        """Telemetry as ``settings`` ask; decision lines go to ``stream`` (stdout).

        Raises ConfigError when the subject hash key is named but unusable.
        """
        config = settings.telemetry
        metrics = Metrics(
            [issuer.issuer for issuer in settings.issuers],
            introspecting=[i.issuer for i in settings.issuers if i.introspection is not None],
        )
        subject = subject_view(load_subject_key(config, environ))
        tracing = tracing if tracing is not None else Tracing()
        tracing.report_drops_to(metrics.spans_dropped)
        decision_log = DecisionLog(
            stream,
            subject=subject,
            caller_trace=tracing.caller_trace_id,
            dropped=metrics.decision_log_dropped,
            queue_size=config.decision_log.queue_size,
            allow_sample_rate=config.decision_log.allow_sample_rate,
        )
        return cls(
            metrics=metrics,
            tracing=tracing,
            decision_log=decision_log,
            subject=subject,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.decision_log.start()

    def close(self) -> None:
        """Write every queued decision line and export every finished span."""
        self.decision_log.close()
        self.tracing.shutdown()

    def watch(self, policies: Callable[[], CompiledPolicies], clock: Callable[[], float]) -> None:
        """Expose the state gauges: rules and version of ``policies()``, key ages by ``clock``."""

        def view() -> StateView:
            current, now = policies(), clock()
            ages = {issuer: now - at for issuer, at in self._key_fetched_at.items()}
            return StateView(current.version, current.rule_count, ages)

        self.metrics.watch_state(view)

    # -- per check -------------------------------------------------------------------------

    def begin_check(self, ctx: RequestContext, decision_id: str) -> CheckScope:
        tracer = self._tracer
        span: Span | None = None
        otel_token: Token[Context] | None = None
        trace_id = span_id = None
        if tracer is not None:
            parent: Context | None = None
            kind = SpanKind.INTERNAL  # inside the transport's own server span
            if not trace.get_current_span().get_span_context().is_valid:
                parent = self._propagator.extract(ctx.headers)
                kind = SpanKind.SERVER
            span = tracer.start_span(
                CHECK_SPAN, context=parent, kind=kind, attributes=request_attributes(ctx)
            )
            span_context = span.get_span_context()
            trace_id, span_id = span_context.trace_id, span_context.span_id
            otel_token = otel_context.attach(trace.set_span_in_context(span, parent))
        correlation = bind(Correlation(decision_id, trace_id, span_id))
        return CheckScope(decision_id, span, trace_id, span_id, otel_token, correlation)

    def end_check(
        self,
        scope: CheckScope,
        ctx: RequestContext,
        decision: Decision | None,
        elapsed: float,
        now: float,
        decision_log: DecisionLog | None = None,
    ) -> None:
        """Counters, span and decision-log line (into ``decision_log``, by default the
        runtime's) of one check."""
        reason = decision.reason if decision is not None else Reason.INTERNAL_ERROR
        self.metrics.observe_check(reason, ctx.transport, elapsed)
        span = scope.span
        try:
            if span is not None:
                if span.is_recording():
                    span.set_attributes(
                        decision_attributes(decision, reason, scope.decision_id, self.subject)
                    )
                    if status_of(reason) >= 500:
                        span.set_status(Status(StatusCode.ERROR, reason.value))
                span.end()
        finally:  # the line is written whatever the span did: one line per decision
            if scope.otel_token is not None:
                otel_context.detach(scope.otel_token)
            unbind(scope.correlation)
            (decision_log or self.decision_log).record(
                now,
                ctx,
                decision,
                scope.decision_id,
                int(elapsed * 1_000_000),
                scope.trace_id,
                scope.span_id,
            )

    # -- key sources -----------------------------------------------------------------------

    def introspected(self, outcome: IntrospectionOutcome) -> None:
        """The introspectors' observer: counts and latency, an event when failing starts/ends."""
        self.metrics.introspected(outcome.issuer, outcome.outcome, outcome.seconds)
        if outcome.changed:
            failing = outcome.outcome == INTROSPECTION_ERROR
            event = Event.INTROSPECTION_FAILING if failing else Event.INTROSPECTION_RECOVERED
            self.events.emit(event, issuer=outcome.issuer, error=outcome.error)

    def jwks_refreshed(self, outcome: RefreshOutcome) -> None:
        """The JWKS caches' observer: refresh counter, key age, rotation and failure events."""
        self.metrics.jwks_refreshed(outcome.issuer, outcome.ok)
        if not outcome.ok:
            self.events.emit(
                Event.KEY_REFRESH_FAILED,
                issuer=outcome.issuer,
                error=outcome.error,
                consecutive_failures=outcome.consecutive_failures,
                keys_kept=len(outcome.kids),
            )
            return
        self._key_fetched_at[outcome.issuer] = outcome.at
        previous = outcome.previous_kids
        if previous is not None and previous != outcome.kids:
            self.events.emit(
                Event.KEYS_ROTATED,
                issuer=outcome.issuer,
                added=tuple(sorted(outcome.kids - previous)),
                removed=tuple(sorted(previous - outcome.kids)),
            )
