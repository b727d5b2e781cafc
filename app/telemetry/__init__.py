"""Telemetry of every decision: traces, the decision log, metrics and events.

``hub.Telemetry`` bundles them per Runtime (app/check.py calls it for every check, whatever
the transport): ``tracing`` (OpenTelemetry, from OTEL_*), ``decision_log`` (one JSON line per
check on stdout), ``metrics`` (Prometheus, the admin listener's /metrics), ``events``
(discrete changes) and ``logging`` (every other log line, as JSON).
"""
