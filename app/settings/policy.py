"""Policy-side settings: just-in-time grants and hot reload."""

from __future__ import annotations

from datetime import timedelta

from pydantic import field_validator

from app.durations import Duration
from app.settings.base import Model


class GrantSettings(Model):
    """Just-in-time grants (``kind: Grant`` files beside the policies)."""

    # The longest a grant may last (expires - not_before); a longer grant fails to load.
    max_duration: Duration = timedelta(hours=8)

    @field_validator("max_duration")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=31):
            raise ValueError("must be between 1m and 31d")
        return value


class ReloadSettings(Model):
    """Hot reload of the policy directory (and the candidate directory). SIGHUP always reloads;
    ``watch`` also reloads when files change."""

    watch: bool = True
    # How often the directories are checked for changes (file names, sizes, modification times).
    interval: Duration = timedelta(seconds=2)

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: timedelta) -> timedelta:
        if not timedelta(milliseconds=100) <= value <= timedelta(hours=1):
            raise ValueError("must be between 100ms and 1h")
        return value
