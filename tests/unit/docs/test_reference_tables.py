"""The reference tables list exactly what the code has: every event the service emits, every
reason code (with its status) and every metric (with its type and labels). A new event, reason
or metric without its row fails here, and so does a row for one that no longer exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from app.identity.token_cache import CacheStats
from app.reasons import Reason, status_of
from app.telemetry.events import Event
from app.telemetry.metrics import Metrics, StateView
from app.telemetry.signals import SignalMetrics, SignalsView
from tests.unit.docs.docs_support import ROOT

APP = ROOT / "app"
TELEMETRY = ROOT / "docs" / "telemetry.md"
TRANSPORTS = ROOT / "docs" / "transports.md"
_CODE = re.compile(r"`([^`]+)`")


def table_after(document: Path, heading: str) -> list[list[str]]:
    """The rows (cells, header and separator skipped) of the first table under ``heading``."""
    lines = document.read_text(encoding="utf-8").splitlines()
    start = next(
        (i for i, line in enumerate(lines) if re.fullmatch(r"#+ " + re.escape(heading), line)),
        None,
    )
    assert start is not None, f"{document.name} has no heading {heading!r}"
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break  # the table ended
    assert len(rows) > 2, f"{document.name}: no table under {heading!r}"
    return rows[2:]


def names(cell: str) -> list[str]:
    return _CODE.findall(cell)


# --- events ----------------------------------------------------------------------------------


def emitted_events() -> dict[str, str]:
    """Every event name the service can emit, with where: the closed set ``Event`` plus every
    string literal passed to an ``emit``/``_emit`` call or written as ``"event": "..."``
    (log lines with an event field, such as the policy step's per-check events)."""
    found = {event.value: "app/telemetry/events.py (Event)" for event in Event}
    for path in sorted(APP.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(ROOT).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                first = node.args[0] if node.args else None
                if name.endswith("emit") and isinstance(first, ast.Constant):
                    found.setdefault(str(first.value), f"{where}:{node.lineno}")
                for keyword in node.keywords:
                    if keyword.arg == "event" and isinstance(keyword.value, ast.Constant):
                        found.setdefault(str(keyword.value.value), f"{where}:{node.lineno}")
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(key, ast.Constant)
                        and key.value == "event"
                        and isinstance(value, ast.Constant)
                        and isinstance(value.value, str)
                    ):
                        found.setdefault(value.value, f"{where}:{node.lineno}")
    return found


def documented_events() -> dict[str, str]:
    """Event name -> the 'Counted in ztauthz_events_total' cell."""
    return {name: row[3] for row in table_after(TELEMETRY, "Events") for name in names(row[0])}


def test_the_scan_finds_the_log_only_events_too() -> None:
    # If the scan broke (e.g. the emitters moved to another idiom), the comparison below would
    # pass with the enum alone; these two are emitted outside the enum.
    found = emitted_events()
    assert {"policy_condition_error", "policy_dry_run_difference"} <= set(found)
    assert {"policies_reloaded", "grant_active"} <= set(found)


def test_every_emitted_event_is_documented_and_nothing_else() -> None:
    emitted = emitted_events()
    documented = documented_events()
    missing = {name: where for name, where in emitted.items() if name not in documented}
    assert missing == {}, "events without a row in docs/telemetry.md 'Events'"
    assert set(documented) - set(emitted) == set(), "rows for events nothing emits"


def test_the_events_table_says_which_are_counted() -> None:
    for name, counted in documented_events().items():
        in_enum = name in {event.value for event in Event}
        assert counted.startswith("yes") == in_enum, (name, counted)


# --- reason codes ----------------------------------------------------------------------------


def test_every_reason_code_is_documented_with_its_status() -> None:
    rows = table_after(TRANSPORTS, "Reason codes")
    documented = {names(row[0])[0]: row[1] for row in rows}
    assert list(documented) == [reason.value for reason in Reason], (
        "the reason-code table in docs/transports.md must list app/reasons.py's codes, in order"
    )
    wrong = {
        code: status
        for code, status in documented.items()
        if status != str(status_of(Reason(code)))
    }
    assert wrong == {}


# --- metrics ---------------------------------------------------------------------------------


def exposed_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """name as scraped (counters with ``_total``) -> (type, label names), from a registry with
    every collector a runtime registers and one sample in every family."""
    metrics = Metrics(["https://idp.example.com"], introspecting=["https://idp.example.com"])
    metrics.watch_state(lambda: StateView("sha256:0", 1, {"https://idp.example.com": 1.0}))
    metrics.watch_token_cache(lambda: CacheStats(1, 10, 1, 1, 0))
    metrics.watch_assertions(lambda: (1, 1))
    metrics.watch_store(lambda: ("memory", True))
    metrics.watch_introspection_cache(lambda: CacheStats(1, 10, 1, 1, 0))
    metrics.event(Event.CONFIG_LOADED.value)
    metrics.observe_check(Reason.ALLOWED, "http", 0.001)
    metrics.decision_log_dropped.inc()
    signals = SignalMetrics(metrics.registry, metrics.checks, ["idp"])
    signals.watch(lambda: SignalsView(True, 1, 0))
    signals.received.labels("idp", "session-revoked").inc()
    signals.applied.labels("idp", "session-revoked").inc()
    signals.propagation.observe(0.01)
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = frozenset(k for s in family.samples for k in s.labels if k != "le")
        found[name] = (family.type, labels)
    return found


def test_every_metric_is_documented_with_its_type_and_labels() -> None:
    rows = table_after(TELEMETRY, "Metrics")
    documented = {names(row[0])[0]: (row[1].split()[0], frozenset(names(row[2]))) for row in rows}
    exposed = exposed_metrics()
    assert sorted(documented) == sorted(exposed)
    assert documented == exposed
