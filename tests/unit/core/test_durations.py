from __future__ import annotations

from datetime import timedelta

import pytest

from app.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("1h30m", 5400), ("2d", 172800), ("250ms", 0.25), (45, 45)],
)
def test_parses(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "m", "15x", "1h 2", "-5s", True, None, [1]])
def test_refuses(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
