"""Time windows: local days and hours in a named time zone, daylight saving included."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.identity.principal import Principal
from app.policy.evaluate import PolicyInput, evaluate
from app.policy.index import CompiledPolicies
from app.policy.loader import check_policy_dir
from app.policy.timewindow import parse_hours, parse_window, within
from app.reasons import Reason

CompilePolicies = Callable[..., CompiledPolicies]
MakePrincipal = Callable[..., Principal]


def at(text: str) -> float:
    return datetime.fromisoformat(text).astimezone(UTC).timestamp()


OFFICE = parse_window("Europe/Berlin", ["mon", "tue", "wed", "thu", "fri"], "08:00-18:00")
NIGHT = parse_window("America/New_York", None, "22:00-06:00")
WEEKEND = parse_window("UTC", ["sat", "sun"], None)


@pytest.mark.parametrize(
    ("window", "moment", "inside"),
    [
        (OFFICE, "2026-11-26T07:00:00Z", True),  # Thu 08:00 in Berlin (winter, UTC+1)
        (OFFICE, "2026-11-26T06:59:59Z", False),
        (OFFICE, "2026-11-26T16:59:00Z", True),  # 17:59
        (OFFICE, "2026-11-26T17:00:00Z", False),  # 18:00: end is exclusive
        (OFFICE, "2026-07-02T06:00:00Z", True),  # summer: 08:00 is 06:00Z (UTC+2)
        (OFFICE, "2026-07-02T16:00:00Z", False),  # 18:00 in summer
        (OFFICE, "2026-11-28T10:00:00Z", False),  # a Saturday
        (OFFICE, "2026-11-27T23:30:00Z", False),  # Fri 23:30Z is Sat 00:30 in Berlin
        (NIGHT, "2026-11-26T03:30:00Z", True),  # 22:30 in New York
        (NIGHT, "2026-11-26T10:59:00Z", True),  # 05:59
        (NIGHT, "2026-11-26T11:00:00Z", False),  # 06:00
        (NIGHT, "2026-11-26T17:00:00Z", False),  # noon
        (WEEKEND, "2026-11-29T23:59:59Z", True),
        (WEEKEND, "2026-11-30T00:00:00Z", False),
    ],
)
def test_within(window: object, moment: str, inside: bool) -> None:
    assert within(window, at(moment)) is inside  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("08:00-18:00", (480, 1080)), ("00:00-24:00", (0, 1440)), ("22:30-06:15", (1350, 375))],
)
def test_parse_hours(text: str, expected: tuple[int, int]) -> None:
    assert parse_hours(text) == expected


@pytest.mark.parametrize(
    "text", ["8-18", "08:00-08:00", "25:00-26:00", "08:60-09:00", "24:30-01:00"]
)
def test_bad_hours(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hours(text)


POLICY = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: p}
spec:
  rules:
    - id: export
      effect: allow
      match: {paths: [/export]}
      subject: {groups_any: [analysts]}
      time_window: {timezone: Europe/Berlin, days: [mon, tue, wed, thu, fri], hours: "08:00-18:00"}
    - id: maintenance-freeze
      effect: deny
      match: {methods: [POST]}
      time_window: {timezone: UTC, days: [sun]}
    - id: post
      effect: allow
      match: {methods: [POST]}
"""


@pytest.mark.parametrize(
    ("method", "path", "groups", "moment", "reason", "rule"),
    [
        ("GET", "/export", ["analysts"], "2026-11-26T10:00:00Z", Reason.ALLOWED, "export"),
        (
            "GET",
            "/export",
            ["analysts"],
            "2026-11-26T18:00:00Z",
            Reason.OUTSIDE_TIME_WINDOW,
            "export",
        ),
        # Out of window is only named when the subject would otherwise be allowed.
        ("GET", "/export", ["sales"], "2026-11-26T18:00:00Z", Reason.NO_MATCHING_RULE, None),
        ("POST", "/x", [], "2026-11-28T10:00:00Z", Reason.ALLOWED, "post"),
        ("POST", "/x", [], "2026-11-29T10:00:00Z", Reason.DENIED_BY_RULE, "maintenance-freeze"),
    ],
)
def test_time_windows_in_rules(
    compile_policies: CompilePolicies,
    principal: MakePrincipal,
    method: str,
    path: str,
    groups: list[str],
    moment: str,
    reason: Reason,
    rule: str | None,
) -> None:
    policies = compile_policies(POLICY)
    verdict = evaluate(
        policies, PolicyInput(method, "h", path), principal(groups=groups), at(moment)
    )
    assert (verdict.reason, verdict.rule_id) == (reason, rule)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("{timezone: Mars/Olympus, hours: '08:00-18:00'}", "unknown time zone 'Mars/Olympus'"),
        ("{timezone: UTC, hours: '18:00-18:00'}", "is an empty window"),
        ("{timezone: UTC}", "give days, hours or both"),
        ("{timezone: UTC, days: [monday]}", "'monday' is not one of: mon"),
    ],
)
def test_bad_windows_are_load_errors_at_file_and_line(
    tmp_path: Path, window: str, message: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: ztauthz/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  rules:\n"
        f"    - id: r\n      effect: allow\n      time_window: {window}\n"
    )
    problems = [str(p) for p in check_policy_dir(tmp_path)]
    assert len(problems) == 1 and message in problems[0], problems
    assert problems[0].startswith(f"{path}:8: spec.rules[0].time_window")
