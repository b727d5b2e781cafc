"""Runtime state: everything a check needs, built once at start and swapped as a whole."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType

import httpx

from app.evidence.gather import EvidenceGatherer, build_gatherer
from app.identity.jwks import KeySource
from app.identity.token_cache import TokenCache
from app.identity.verify import TokenVerifier, build_key_sources
from app.policy.index import CompiledPolicies
from app.policy.loader import LoadOptions, load_policy_dir
from app.policy.memo import DecisionMemo
from app.settings import Settings
from app.telemetry.events import Event
from app.telemetry.hub import Telemetry

log = logging.getLogger("ztauthz.state")


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """An immutable snapshot; a reload builds a new one and swaps the reference."""

    settings: Settings
    verifier: TokenVerifier
    policies: CompiledPolicies
    candidate: CompiledPolicies | None = None  # evaluated beside the live policies, not enforced
    evidence: EvidenceGatherer | None = None  # None: no evidence source is configured
    # Readiness detail about policy reloads (app/reload.py): part of the snapshot, so /readyz
    # never shows the policies of one reload beside the reload report of another.
    reload_status: Mapping[str, object] = field(
        default_factory=lambda: MappingProxyType({"enabled": False})
    )
    # Decisions of plain rules (app/policy/memo.py); a new state, a new memo.
    memo: DecisionMemo = field(default_factory=DecisionMemo, init=False, compare=False, repr=False)


def load_options(settings: Settings) -> LoadOptions:
    return LoadOptions(
        grant_max_duration=settings.grants.max_duration.total_seconds(),
        networks=frozenset(settings.evidence.networks),
    )


class Runtime:
    """Owns the long-lived resources (HTTP client, key caches) behind the current state."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        *,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        # Metrics, traces, decision log, events; the runtime owns it (closed on exit).
        self.telemetry = telemetry if telemetry is not None else Telemetry.create(settings)
        # Loading policies first: an invalid policy directory stops the start (PolicyLoadError).
        self._policies = load_policy_dir(settings.policies, load_options(settings))
        candidate = settings.policies_candidate
        self._candidate = (
            None if candidate is None else load_policy_dir(candidate, load_options(settings))
        )
        self._swap_lock = threading.Lock()
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self._sources: dict[str, KeySource] = dict(
            build_key_sources(
                settings.issuers, self._client, clock, on_refresh=self.telemetry.jwks_refreshed
            )
        )
        self.state = RuntimeState(
            settings=settings,
            verifier=TokenVerifier(
                settings.issuers,
                self._sources,
                settings.token.max_bytes,
                TokenCache(settings.token.cache_size) if settings.token.cache_size else None,
            ),
            policies=self._policies,
            candidate=self._candidate,
            evidence=build_gatherer(
                settings, self._client, clock, on_refresh=self.telemetry.jwks_refreshed
            ),
        )
        self.telemetry.watch(lambda: self.state.policies, clock)
        token_cache = self.state.verifier.cache
        if token_cache is not None:
            self.telemetry.metrics.watch_token_cache(token_cache.stats)

    def replace_policies(
        self,
        policies: CompiledPolicies,
        candidate: CompiledPolicies | None,
        reload_status: Mapping[str, object] | None = None,
    ) -> RuntimeState:
        """Swap in new compiled policies (and the reload report that goes with them): one
        reference assignment, so every reader sees either the old or the new state, never a mix
        and never none."""
        with self._swap_lock:
            changes: dict[str, object] = {"policies": policies, "candidate": candidate}
            if reload_status is not None:
                changes["reload_status"] = MappingProxyType(dict(reload_status))
            self.state = dataclasses.replace(self.state, **changes)  # type: ignore[arg-type]
            return self.state

    def set_reload_status(self, reload_status: Mapping[str, object]) -> None:
        """A new reload report for the same policies (a rejected change, the first report);
        an unchanged report keeps the state (and its decision memo) as it is."""
        with self._swap_lock:
            if dict(reload_status) != dict(self.state.reload_status):
                status = MappingProxyType(dict(reload_status))
                self.state = dataclasses.replace(self.state, reload_status=status)

    @property
    def reload_status(self) -> Mapping[str, object]:
        return self.state.reload_status

    def is_ready(self) -> bool:
        return self.state.verifier.is_ready(self._clock())

    def now(self) -> float:
        return self._clock()

    async def __aenter__(self) -> Runtime:
        self.telemetry.start()
        for source in self._sources.values():
            await source.start()
        if self.state.evidence is not None:
            await self.state.evidence.start()
        self.telemetry.events.emit(
            Event.CONFIG_LOADED,
            policy_version=self._policies.version,
            rules=self._policies.rule_count,
            issuers=len(self._settings.issuers),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for source in self._sources.values():
            await source.aclose()
        if self.state.evidence is not None:
            await self.state.evidence.aclose()
        await self._client.aclose()
        self.telemetry.close()
