"""The decision log and how subjects appear in logs and spans."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from app.settings.base import Model


class DecisionLogSettings(Model):
    """The decision log: one JSON line per check on stdout, written off the request path."""

    # Fraction of allow lines written (denials are always written); 0 keeps denials only.
    allow_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    # Lines waiting for the writer; beyond this they are dropped and counted, never blocking.
    queue_size: int = Field(default=10_000, ge=16, le=1_000_000)


class TelemetrySettings(Model):
    """Decision log, and how subjects appear in logs and spans.

    Tracing is configured with the standard ``OTEL_*`` environment variables instead.
    Subjects are pseudonymized (HMAC-SHA256) when a key is named: the key itself is read from
    the environment variable or file named here, never from this configuration.
    """

    decision_log: DecisionLogSettings = DecisionLogSettings()
    subject_hash_key_env: str | None = Field(default=None, min_length=1)
    subject_hash_key_file: Path | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> TelemetrySettings:
        if self.subject_hash_key_env is not None and self.subject_hash_key_file is not None:
            raise ValueError("give subject_hash_key_env or subject_hash_key_file, not both")
        return self
