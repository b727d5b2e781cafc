"""Time windows (``time_window:``): local days and hours in a named IANA time zone."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.policy.model import TimeWindow

DAYS: dict[str, int] = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
_HOURS = re.compile(r"([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)")
_DAY = 24 * 60


def parse_window(timezone: str, days: Sequence[str] | None, hours: str | None) -> TimeWindow:
    """Build a window; ``ValueError`` with a readable message for a bad zone or hours."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {timezone!r}: use an IANA name such as Europe/Berlin or UTC"
        ) from None
    start, end = (0, _DAY) if hours is None else parse_hours(hours)
    chosen = frozenset(DAYS[d] for d in days) if days is not None else frozenset(DAYS.values())
    return TimeWindow(timezone=zone, days=chosen, start=start, end=end)


def parse_hours(text: str) -> tuple[int, int]:
    """``"08:00-18:00"`` -> minutes after midnight (start inclusive, end exclusive)."""
    found = _HOURS.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"hours {text!r} must look like 08:00-18:00 (24-hour clock, local time)")
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start > _DAY or end > _DAY:
        raise ValueError(f"hours {text!r}: 24:00 is the latest time")
    if start == end:
        raise ValueError(f"hours {text!r} is an empty window")
    return start % _DAY, end


def within(window: TimeWindow, now: float) -> bool:
    """Is ``now`` (epoch seconds) inside the window? The day is the local date of ``now``."""
    local = datetime.fromtimestamp(now, window.timezone)
    if local.isoweekday() not in window.days:
        return False
    minute = local.hour * 60 + local.minute
    if window.start < window.end:
        return window.start <= minute < window.end
    return minute >= window.start or minute < window.end  # past midnight, e.g. 22:00-06:00
