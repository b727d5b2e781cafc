"""Hot reload: the policy directory (grants included) and the candidate directory, on change and
on SIGHUP, compiled off the request path and swapped in atomically.

A daemon thread wakes every ``reload.interval`` (or at once on ``request()``, which the SIGHUP
handler calls), fingerprints the directories (file names, sizes, modification times, inodes;
symlinks followed, so a Kubernetes ConfigMap's ``..data`` swap counts) and, when something
changed, compiles them in that thread. Only a directory that compiles without error replaces
its predecessor, by one reference assignment (``Runtime.replace_policies``): every check sees
the old or the new policies, never a mix and never none. A broken change keeps the last good
policies, is emitted as ``policies_rejected`` (with every ``file:line`` problem) and shows in
``/readyz`` until a later change compiles; the live and the candidate directory are judged
separately. The same tick emits ``grant_active`` / ``grant_expired`` when a grant's window opens
or closes (decisions never wait for it: they compare each grant's window with their own clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from app.fileprint import Fingerprint, fingerprint
from app.policy.index import CompiledPolicies
from app.policy.loader import compile_policy_dir
from app.policy.model import Grant
from app.policy.problem import Problem
from app.state import Runtime, load_options

log = logging.getLogger("ztauthz.policy")

MAX_REPORTED_PROBLEMS = 20


class EventSink(Protocol):
    def __call__(self, event: str, /, **fields: Any) -> None: ...


def log_event(event: str, /, **fields: Any) -> None:
    """The fallback sink: one log line with ``extra={"event": ...}``."""
    level = logging.WARNING if event == "policies_rejected" else logging.INFO
    log.log(level, event.replace("_", " "), extra={"event": event, **fields})


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _grant_state(grant: Grant, now: float) -> str:
    if now < grant.not_before:
        return "pending"
    return "active" if now < grant.expires else "expired"


@dataclass(slots=True)
class _Source:
    """One watched directory: the live policies or the candidate."""

    name: str
    path: Path | None
    seen: Fingerprint = ()
    error: tuple[str, ...] = ()
    error_at: float | None = None


@dataclass(slots=True)
class ReloadCounters:
    reloads: int = 0
    failures: int = 0
    last_reload: float | None = None
    grant_states: dict[str, str] = field(default_factory=dict)


class PolicyReloader:
    """Watches the policy directories and swaps compiled policies into ``runtime``."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        interval: float,
        watch: bool = True,
        emit: EventSink = log_event,
        clock: Callable[[], float] = time.time,
        after_swap: Callable[[], object] | None = None,
    ) -> None:
        """``after_swap`` runs in the reloading thread after every swap (``serve`` passes
        ``app.heap.settle``: the new policies are moved out of the collector's sight)."""
        settings = runtime.state.settings
        self._runtime = runtime
        self._after_swap = after_swap
        self._interval = interval
        self._watch = watch
        self._emit = emit
        self._clock = clock
        self._live = _Source("policies", settings.policies, fingerprint(settings.policies))
        self._candidate = _Source(
            "candidate", settings.policies_candidate, fingerprint(settings.policies_candidate)
        )
        self._counters = ReloadCounters()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._forced = False
        self._lock = threading.Lock()  # one reload at a time (thread tick vs. direct calls)
        self._thread: threading.Thread | None = None
        self._note_grants(runtime.state.policies, announce=True)
        self._publish()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="ztauthz-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def request(self) -> None:
        """Reload now even if nothing seems to have changed (SIGHUP). Safe from any thread
        and from a signal handler."""
        self._forced = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            forced, self._forced = self._forced, False
            try:
                if forced or self._watch:
                    self.tick(force=forced)
                else:  # not watching files: only SIGHUP reloads, grant events still tick
                    self.tick_grants()
            except Exception:  # never let the watcher die; the old policies keep serving
                log.exception("policy reload failed unexpectedly")

    # --- one round -------------------------------------------------------------------------

    def tick(self, force: bool = False) -> bool:
        """Reload what changed (everything if ``force``); True if new policies were swapped in."""
        with self._lock:
            swapped = self._reload(force)
            self._note_grants(self._runtime.state.policies, announce=True)
            self._publish()
            return swapped

    def tick_grants(self) -> None:
        with self._lock:
            self._note_grants(self._runtime.state.policies, announce=True)

    def _reload(self, force: bool) -> bool:
        state = self._runtime.state
        live = self._compile(self._live, force)
        candidate = (
            self._compile(self._candidate, force) if self._candidate.path is not None else None
        )
        new_live = live or state.policies
        new_candidate = candidate or state.candidate
        if new_live is state.policies and new_candidate is state.candidate:
            return False
        same_live = new_live.version == state.policies.version
        same_candidate = (new_candidate.version if new_candidate else None) == (
            state.candidate.version if state.candidate else None
        )
        if same_live and same_candidate:
            return False  # touched but identical content: nothing to swap
        self._counters.reloads += 1
        self._counters.last_reload = self._clock()
        # The policies and their report in one swap: /readyz reads one snapshot (issue 16).
        self._runtime.replace_policies(
            new_live, new_candidate, self._status(new_live, new_candidate)
        )
        self._emit(
            "policies_reloaded",
            policy_version=new_live.version,
            previous_version=state.policies.version,
            rules=new_live.rule_count,
            grants=len(new_live.grants.grants),
            candidate_version=new_candidate.version if new_candidate else None,
        )
        if self._after_swap is not None:
            self._after_swap()
        return True

    def _compile(self, source: _Source, force: bool) -> CompiledPolicies | None:
        """New compiled policies for ``source`` if it changed and compiles; else None."""
        current = fingerprint(source.path)
        if current == source.seen and not force:
            return None
        source.seen = current
        assert source.path is not None
        options = load_options(self._runtime.state.settings)
        problems, compiled = compile_policy_dir(source.path, options)
        errors = [p for p in problems if p.severity == "error"]
        if compiled is None or errors:
            self._reject(source, errors or [Problem(str(source.path), 0, "cannot be compiled")])
            return None
        source.error, source.error_at = (), None
        return compiled

    def _reject(self, source: _Source, errors: list[Problem]) -> None:
        shown = tuple(str(p) for p in errors[:MAX_REPORTED_PROBLEMS])
        source.error, source.error_at = shown, self._clock()
        self._counters.failures += 1
        self._emit(
            "policies_rejected",
            directory=source.name,
            errors=len(errors),
            problems=shown,
            policy_version=self._runtime.state.policies.version,
        )

    def _note_grants(self, policies: CompiledPolicies, *, announce: bool) -> None:
        now = self._clock()
        states: dict[str, str] = {}
        for grant in policies.grants.grants:
            state = _grant_state(grant, now)
            states[grant.name] = state
            before = self._counters.grant_states.get(grant.name)
            if not announce or state == before:
                continue
            who = grant.subject if grant.subject is not None else f"group:{grant.group}"
            fields: dict[str, Any] = {
                "grant": grant.name,
                "subject": who,
                "approved_by": grant.approved_by,
                "ticket": grant.ticket,
                "not_before": _iso(grant.not_before),
                "expires": _iso(grant.expires),
            }
            if state == "active":
                self._emit("grant_active", **fields)
            elif state == "expired" and before == "active":
                self._emit("grant_expired", **fields)
        self._counters.grant_states = states

    # --- readiness detail ------------------------------------------------------------------

    def _publish(self) -> None:
        state = self._runtime.state
        self._runtime.set_reload_status(self._status(state.policies, state.candidate))

    def _status(
        self, policies: CompiledPolicies, candidate: CompiledPolicies | None
    ) -> dict[str, object]:
        status: dict[str, object] = {
            "watch": self._watch,
            "interval_seconds": self._interval,
            "policy_version": policies.version,
            "reloads": self._counters.reloads,
            "failures": self._counters.failures,
            "last_reload": None
            if self._counters.last_reload is None
            else _iso(self._counters.last_reload),
            "last_error": _error(self._live),
        }
        if self._candidate.path is not None:
            status["candidate_version"] = candidate.version if candidate else None
            status["candidate_last_error"] = _error(self._candidate)
        return status


def _error(source: _Source) -> dict[str, object] | None:
    if not source.error or source.error_at is None:
        return None
    return {"at": _iso(source.error_at), "problems": list(source.error)}


@contextlib.contextmanager
def reloading(
    runtime: Runtime,
    emit: EventSink = log_event,
    after_swap: Callable[[], object] | None = None,
) -> Iterator[PolicyReloader]:
    """Run a reloader for ``runtime`` and reload on SIGHUP (in the main thread's event loop)
    for as long as the block runs."""
    settings = runtime.state.settings.reload
    reloader = PolicyReloader(
        runtime,
        interval=settings.interval.total_seconds(),
        watch=settings.watch,
        emit=emit,
        after_swap=after_swap,
    )
    reloader.start()
    loop = asyncio.get_running_loop()
    installed = False
    try:
        loop.add_signal_handler(signal.SIGHUP, reloader.request)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):
        log.warning("SIGHUP reloads are unavailable here (not the main thread)")
    try:
        yield reloader
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGHUP)
        reloader.stop()
