"""Runtime state: everything a check needs, built once at start and swapped as a whole."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

import httpx

from app.evidence.gather import EvidenceGatherer, build_gatherer
from app.identity.jwks import KeySource
from app.identity.principal import Principal
from app.identity.token_cache import TokenCache
from app.identity.verify import TokenVerifier, build_key_sources
from app.policy.index import CompiledPolicies
from app.policy.loader import LoadOptions, load_policy_dir
from app.policy.memo import DecisionMemo
from app.settings import Settings
from app.signals.records import Effect, Record
from app.signals.service import Signals
from app.signals.view import RevocationView, principal_keys
from app.store.open import open_store
from app.telemetry.events import Event
from app.telemetry.hub import Telemetry
from app.telemetry.signals import SignalMetrics

log = logging.getLogger("ztauthz.state")


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """An immutable snapshot; a reload builds a new one and swaps the reference."""

    settings: Settings
    verifier: TokenVerifier
    policies: CompiledPolicies
    candidate: CompiledPolicies | None = None  # evaluated beside the live policies, not enforced
    evidence: EvidenceGatherer | None = None  # None: no evidence source is configured
    # What security events and operators revoked (app/signals/): one view for the runtime's
    # life, shared by every state it swaps in.
    revocations: RevocationView = field(default_factory=RevocationView)
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
        # Readiness detail about policy reloads (app/reload.py keeps it current).
        self.reload_status: Mapping[str, object] = {"enabled": False}
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self._sources: dict[str, KeySource] = dict(
            build_key_sources(
                settings.issuers, self._client, clock, on_refresh=self.telemetry.jwks_refreshed
            )
        )
        # Shared state (app/store/): the revocation view is fed from it.
        self.store = open_store(settings.store)
        metrics = self.telemetry.metrics
        self.signals = Signals(
            settings,
            self.store,
            self._client,
            self.telemetry.events,
            SignalMetrics(
                metrics.registry, metrics.checks, [t.name for t in settings.signals.transmitters]
            ),
            clock,
            on_refresh=self.telemetry.jwks_refreshed,
        )
        self.signals.invalidate = self._forget
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
            revocations=self.signals.view,
        )
        self.telemetry.watch(lambda: self.state.policies, clock)
        token_cache = self.state.verifier.cache
        if token_cache is not None:
            self.telemetry.metrics.watch_token_cache(token_cache.stats)

    def replace_policies(
        self, policies: CompiledPolicies, candidate: CompiledPolicies | None
    ) -> RuntimeState:
        """Swap in new compiled policies: one reference assignment, so every check sees either
        the old or the new state, never a mix and never none."""
        with self._swap_lock:
            self.state = dataclasses.replace(self.state, policies=policies, candidate=candidate)
            return self.state

    def is_ready(self) -> bool:
        return self.state.verifier.is_ready(self._clock()) and self.signals.ready()

    def _forget(self, record: Record) -> None:
        """Drop what caches could hold an allow for ``record``'s subject or session (the next
        check asks the view first anyway; nothing stale is kept past an event)."""
        if record.effect is Effect.DEVICE:
            return  # neither cache holds device evidence
        state = self.state

        def match(principal: Principal) -> bool:
            return record.key in principal_keys(principal)

        if state.verifier.cache is not None:
            state.verifier.cache.discard(match)
        state.memo.discard(match)

    def now(self) -> float:
        return self._clock()

    async def __aenter__(self) -> Runtime:
        self.telemetry.start()
        for source in self._sources.values():
            await source.start()
        if self.state.evidence is not None:
            await self.state.evidence.start()
        await self.signals.start()
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
        await self.signals.aclose()  # closes the store too
        await self._client.aclose()
        self.telemetry.close()
