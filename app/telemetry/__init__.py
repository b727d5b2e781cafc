"""Telemetry: the decision log today; traces and metrics build on it."""
