"""Hot reload: change, SIGHUP, broken changes, candidate directories, grant events, atomicity."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from app.fileprint import fingerprint
from app.policy.decide import policy_decision
from app.policy.evaluate import PolicyInput
from app.reload import PolicyReloader, reloading
from app.settings import Settings
from app.state import Runtime

POLICY = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {{name: p}}
spec:
  rules:
    - id: {rule}
      effect: {effect}
      anonymous: {anonymous}
      match: {{paths: [/probe]}}
"""
OPEN = POLICY.format(rule="probe-open", effect="allow", anonymous="true")
CLOSED = POLICY.format(rule="probe-closed", effect="deny", anonymous="false")
BROKEN = OPEN.replace("effect: allow", "effect: permit")

T0 = 1_795_687_200.0


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, /, **fields: Any) -> None:
        self.seen.append((event, fields))

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]


def write(directory: Path, text: str, name: str = "p.yaml") -> None:
    path = directory / name
    path.write_text(text)
    # Make every write visible to the fingerprint even within one mtime tick.
    stamp = time.time_ns() + 1_000_000 * len(text)
    os.utime(path, ns=(stamp, stamp))


def settings_for(policies: Path, candidate: Path | None = None, **reload: Any) -> Settings:
    return Settings.model_validate(
        {
            "issuers": [
                {
                    "issuer": "http://127.0.0.1:9",
                    "audiences": ["https://api.example.com"],
                    "jwks_uri": "http://127.0.0.1:9/jwks",
                }
            ],
            "policies": policies,
            "policies_candidate": candidate,
            "reload": reload or {"interval": "100ms"},
        }
    )


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    live, candidate = tmp_path / "live", tmp_path / "candidate"
    live.mkdir()
    candidate.mkdir()
    write(live, OPEN)
    write(candidate, OPEN)
    return live, candidate


@pytest.fixture
async def make_runtime() -> AsyncIterator[Callable[[Settings], Runtime]]:
    made: list[Runtime] = []

    def make(settings: Settings) -> Runtime:
        runtime = Runtime(settings, clock=lambda: T0)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await runtime.__aexit__(None, None, None)


def current_decision(runtime: Runtime) -> tuple[str, bool, str | None]:
    state = runtime.state
    decision = policy_decision(
        state.policies, state.candidate, PolicyInput("GET", "h", "/probe"), None, T0, "d"
    )
    return decision.policy_version, decision.allow, decision.rule_id


async def test_a_change_is_swapped_in_and_reported(
    dirs: tuple[Path, Path], make_runtime: Callable[[Settings], Runtime]
) -> None:
    live, _ = dirs
    runtime = make_runtime(settings_for(live))
    events = Events()
    reloader = PolicyReloader(runtime, interval=1, emit=events)
    before = runtime.state
    assert reloader.tick() is False  # nothing changed
    write(live, CLOSED)
    assert reloader.tick() is True
    assert runtime.state is not before
    assert runtime.state.policies.version != before.policies.version
    assert current_decision(runtime)[1:] == (False, "probe-closed")
    assert events.seen == [
        (
            "policies_reloaded",
            {
                "policy_version": runtime.state.policies.version,
                "previous_version": before.policies.version,
                "rules": 1,
                "grants": 0,
                "candidate_version": None,
            },
        )
    ]
    status = runtime.reload_status
    assert (status["reloads"], status["failures"], status["last_error"]) == (1, 0, None)


async def test_a_broken_change_keeps_the_last_good_policies(
    dirs: tuple[Path, Path], make_runtime: Callable[[Settings], Runtime]
) -> None:
    live, _ = dirs
    runtime = make_runtime(settings_for(live))
    events = Events()
    reloader = PolicyReloader(runtime, interval=1, emit=events, clock=lambda: T0)
    good = runtime.state
    write(live, BROKEN)
    assert reloader.tick() is False
    assert runtime.state is good
    assert current_decision(runtime)[1:] == (True, "probe-open")
    assert events.names() == ["policies_rejected"]
    fields = events.seen[0][1]
    assert fields["directory"] == "policies"
    assert fields["policy_version"] == good.policies.version
    assert fields["problems"][0].startswith(f"{live / 'p.yaml'}:7: spec.rules[0].effect:")
    error = runtime.reload_status["last_error"]
    assert isinstance(error, dict) and error["problems"] == list(fields["problems"])
    # Unchanged broken files are not compiled again and again...
    assert reloader.tick() is False and events.names() == ["policies_rejected"]
    # ...but SIGHUP (force) does try again.
    assert reloader.tick(force=True) is False and events.names().count("policies_rejected") == 2
    write(live, CLOSED)
    assert reloader.tick() is True
    assert runtime.reload_status["last_error"] is None
    assert current_decision(runtime)[1:] == (False, "probe-closed")


async def test_touching_a_file_without_changing_it_swaps_nothing(
    dirs: tuple[Path, Path], make_runtime: Callable[[Settings], Runtime]
) -> None:
    live, _ = dirs
    runtime = make_runtime(settings_for(live))
    events = Events()
    reloader = PolicyReloader(runtime, interval=1, emit=events)
    before = runtime.state
    write(live, OPEN)
    assert fingerprint(live) != () and reloader.tick() is False
    assert runtime.state is before and events.seen == []


async def test_live_and_candidate_are_judged_separately(
    dirs: tuple[Path, Path], make_runtime: Callable[[Settings], Runtime]
) -> None:
    live, candidate = dirs
    runtime = make_runtime(settings_for(live, candidate))
    events = Events()
    reloader = PolicyReloader(runtime, interval=1, emit=events)
    write(candidate, BROKEN)
    write(live, CLOSED)
    assert reloader.tick() is True
    assert current_decision(runtime)[1:] == (False, "probe-closed")
    assert runtime.state.candidate is not None
    assert [r.id for r in runtime.state.candidate.rules] == ["probe-open"]  # the last good one
    assert events.names() == ["policies_rejected", "policies_reloaded"]
    assert events.seen[0][1]["directory"] == "candidate"
    assert runtime.reload_status["candidate_last_error"] is not None
    assert runtime.reload_status["last_error"] is None
    # The candidate's opinion differs from the live decision: it is on the decision.
    state = runtime.state
    decision = policy_decision(
        state.policies, state.candidate, PolicyInput("GET", "h", "/probe"), None, T0, "d"
    )
    assert decision.candidate is not None and decision.candidate.rule_id == "probe-open"


async def test_grant_windows_opening_and_closing_are_events(
    dirs: tuple[Path, Path], make_runtime: Callable[[Settings], Runtime]
) -> None:
    live, _ = dirs
    write(
        live,
        "apiVersion: ztauthz/v1\nkind: Grant\nmetadata: {name: g}\nspec:\n  subject: dana\n"
        "  grant: x\n  not_before: 2026-11-26T10:00:00Z\n  expires: 2026-11-26T11:00:00Z\n"
        "  approved_by: erin\n  reason: r\n  ticket: INC-1\n",
        "grant.yaml",
    )
    runtime = make_runtime(settings_for(live))
    now = [T0 - 1]
    events = Events()
    reloader = PolicyReloader(runtime, interval=1, emit=events, clock=lambda: now[0])
    assert events.seen == []  # pending at start
    now[0] = T0
    reloader.tick_grants()
    now[0] = T0 + 1800
    reloader.tick_grants()
    now[0] = T0 + 3600
    reloader.tick_grants()
    assert events.names() == ["grant_active", "grant_expired"]
    assert events.seen[0][1] == {
        "grant": "g",
        "subject": "dana",
        "approved_by": "erin",
        "ticket": "INC-1",
        "not_before": "2026-11-26T10:00:00Z",
        "expires": "2026-11-26T11:00:00Z",
    }


async def test_every_decision_sees_one_whole_policy_set_during_reloads(
    dirs: tuple[Path, Path], make_runtime: Callable[[Settings], Runtime]
) -> None:
    live, _ = dirs
    runtime = make_runtime(settings_for(live))
    reloader = PolicyReloader(runtime, interval=1, emit=Events())
    versions: dict[str, tuple[bool, str]] = {runtime.state.policies.version: (True, "probe-open")}
    seen: list[tuple[str, bool, str | None]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            seen.append(current_decision(runtime))

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        for round_ in range(30):
            write(live, CLOSED if round_ % 2 == 0 else OPEN)
            assert reloader.tick() is True
            version = runtime.state.policies.version
            versions[version] = (False, "probe-closed") if round_ % 2 == 0 else (True, "probe-open")
    finally:
        stop.set()
        worker.join()
    assert len(seen) > 30
    assert {v for v, _, _ in seen} <= set(versions)
    for version, allow, rule in seen:
        assert versions[version] == (allow, rule)


async def wait_for(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_sighup_reloads_even_when_not_watching(
    dirs: tuple[Path, Path], make_runtime: Callable[[Settings], Runtime]
) -> None:
    live, _ = dirs
    runtime = make_runtime(settings_for(live, watch=False, interval="100ms"))
    before = runtime.state.policies.version
    with reloading(runtime, emit=Events()):
        write(live, CLOSED)
        await asyncio.sleep(0.3)  # several intervals: not watching, so nothing happens
        assert runtime.state.policies.version == before
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: runtime.state.policies.version != before)
    assert current_decision(runtime)[1:] == (False, "probe-closed")
    assert runtime.reload_status["watch"] is False


async def test_watching_picks_up_a_change_without_a_signal(
    dirs: tuple[Path, Path], make_runtime: Callable[[Settings], Runtime]
) -> None:
    live, _ = dirs
    runtime = make_runtime(settings_for(live, interval="100ms"))
    with reloading(runtime, emit=Events()):
        write(live, CLOSED)
        await wait_for(lambda: current_decision(runtime)[1:] == (False, "probe-closed"))
        assert current_decision(runtime)[0] == runtime.state.policies.version


async def test_after_swap_runs_once_per_swap_and_never_otherwise(
    dirs: tuple[Path, Path], make_runtime: Callable[[Settings], Runtime]
) -> None:
    live, _ = dirs
    runtime = make_runtime(settings_for(live))
    seen: list[str] = []
    reloader = PolicyReloader(
        runtime,
        interval=1,
        emit=Events(),
        after_swap=lambda: seen.append(runtime.state.policies.version),
    )
    assert reloader.tick() is False and seen == []  # nothing changed
    write(live, BROKEN)
    assert reloader.tick() is False and seen == []  # rejected: the old policies stay
    write(live, OPEN)
    assert reloader.tick() is False and seen == []  # the same content as before
    write(live, CLOSED)
    assert reloader.tick() is True
    assert seen == [runtime.state.policies.version]  # after the swap: sees the new policies
