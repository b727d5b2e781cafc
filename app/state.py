"""Runtime state: everything a check needs, built once at start and swapped as a whole."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType

import httpx

from app.assertion import AssertionSigner
from app.evidence.gather import EvidenceGatherer, build_gatherer
from app.identity.binding import SenderBinding
from app.identity.dpop import ProofRules
from app.identity.dpop_nonce import NonceIssuer
from app.identity.introspection import Introspector, OutcomeObserver
from app.identity.introspection_client import IntrospectionClient, load_credentials
from app.identity.jwks import KeySource
from app.identity.principal import Principal
from app.identity.token_cache import CacheStats, TokenCache
from app.identity.verify import TokenVerifier, build_key_sources
from app.policy.compile import LoadOptions
from app.policy.index import CompiledPolicies
from app.policy.loader import load_policy_dir
from app.policy.memo import DecisionMemo
from app.settings import Settings
from app.signals.records import Effect, Record
from app.signals.service import Signals
from app.signals.view import RevocationView, principal_keys
from app.store import SharedStore
from app.store.health import StoreHealth
from app.store.memory import MemoryStore
from app.store.open import open_store
from app.telemetry.events import Event
from app.telemetry.hub import Telemetry
from app.telemetry.signals import SignalMetrics

log = logging.getLogger("ztauthz.state")


def build_binding(settings: Settings, store: SharedStore, health: StoreHealth) -> SenderBinding:
    """Sender-constrained token enforcement (app/identity/binding.py) as configured."""
    dpop = settings.dpop
    nonce = dpop.nonce
    certificates = settings.evidence.client_certificate
    return SenderBinding(
        ProofRules(
            algorithms=frozenset(dpop.algorithms),
            max_age=dpop.max_age.total_seconds(),
            leeway=dpop.leeway.total_seconds(),
            max_bytes=dpop.max_proof_bytes,
        ),
        store,
        health,
        nonces=None
        if nonce is None
        else NonceIssuer.from_file(nonce.secret_file, nonce.window.total_seconds()),
        trust_xfcc=certificates is not None and certificates.trust_xfcc,
    )


def _standalone_binding() -> SenderBinding:
    """Binding enforcement with the default rules and an in-process store (tests that build
    a RuntimeState by hand): bound tokens are never let through unchecked."""
    store = MemoryStore()
    return SenderBinding(
        ProofRules(frozenset({"ES256", "RS256", "PS256", "EdDSA"}), 60.0, 5.0, 8192),
        store,
        StoreHealth(store, time.time, interval=2.0, unready_after=30.0),
    )


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """An immutable snapshot; a reload builds a new one and swaps the reference."""

    settings: Settings
    verifier: TokenVerifier
    policies: CompiledPolicies
    candidate: CompiledPolicies | None = None  # evaluated beside the live policies, not enforced
    evidence: EvidenceGatherer | None = None  # None: no evidence source is configured
    # Enforces cnf (DPoP proofs, certificate-bound tokens) on every token that carries it.
    binding: SenderBinding = field(default_factory=_standalone_binding, compare=False, repr=False)
    # What security events and operators revoked (app/signals/): one view for the runtime's
    # life, shared by every state it swaps in.
    revocations: RevocationView = field(default_factory=RevocationView)
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


def build_introspectors(
    settings: Settings,
    discovery: httpx.AsyncClient,
    clock: Callable[[], float],
    on_outcome: OutcomeObserver | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Introspector]:
    """One Introspector per issuer with ``introspection`` settings, its credentials read now
    (ConfigError naming the key when one is missing); ``discovery`` finds endpoints."""
    built: dict[str, Introspector] = {}
    for position, issuer in enumerate(settings.issuers):
        config = issuer.introspection
        if config is None:
            continue
        credentials = load_credentials(f"issuers[{position}].introspection", config, environ)
        client = IntrospectionClient(issuer.issuer, config, credentials)
        built[issuer.issuer] = Introspector(issuer, client, discovery, clock, on_outcome)
    return built


def _summed(stats: Iterable[CacheStats]) -> CacheStats:
    rows = list(stats)
    return CacheStats(
        *(sum(getattr(row, f.name) for row in rows) for f in dataclasses.fields(CacheStats))
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
        # The signed identity assertion (off by default): its keys are read now, so that a key
        # file that cannot sign stops the start (ConfigError naming the file).
        self.assertions: AssertionSigner | None = (
            AssertionSigner.load(settings.assertion, emit=self.telemetry.events.emit, clock=clock)
            if settings.assertion.enabled
            else None
        )
        self._swap_lock = threading.Lock()
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        # The shared store (DPoP replay cache; revocations): memory, or Redis for replicas.
        self.store = open_store(settings.store)
        events = self.telemetry.events
        metrics = self.telemetry.metrics
        self.store_health = StoreHealth(
            self.store,
            clock,
            interval=settings.store.health_interval.total_seconds(),
            unready_after=settings.store.unready_after.total_seconds(),
            on_change=lambda up, error: events.emit(
                Event.STORE_RECOVERED if up else Event.STORE_UNAVAILABLE,
                backend=self.store.backend,
                error=error,
            ),
            on_failure=lambda operation: metrics.store_failures.labels(operation).inc(),
        )
        metrics.watch_store(lambda: (self.store.backend, self.store_health.up))
        self._sources: dict[str, KeySource] = dict(
            build_key_sources(
                settings.issuers, self._client, clock, on_refresh=self.telemetry.jwks_refreshed
            )
        )
        # Read the introspection secrets first: a missing one stops the start (ConfigError).
        self._introspectors = build_introspectors(
            settings, self._client, clock, self.telemetry.introspected
        )
        # Continuous access evaluation (app/signals/): the revocation view, fed from the store.
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
                self._introspectors,
            ),
            policies=self._policies,
            candidate=self._candidate,
            evidence=build_gatherer(
                settings, self._client, clock, on_refresh=self.telemetry.jwks_refreshed
            ),
            binding=build_binding(settings, self.store, self.store_health),
            revocations=self.signals.view,
        )
        self.telemetry.watch(lambda: self.state.policies, clock)
        if self.assertions is not None:
            counts = self.assertions.counts
            self.telemetry.metrics.watch_assertions(lambda: (counts.signed, counts.reused))
        token_cache = self.state.verifier.cache
        if token_cache is not None:
            self.telemetry.metrics.watch_token_cache(token_cache.stats)
        if self._introspectors:
            introspectors = tuple(self._introspectors.values())
            self.telemetry.metrics.watch_introspection_cache(
                lambda: _summed(i.cache.stats() for i in introspectors)
            )

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
        now = self._clock()
        return (
            self.state.verifier.is_ready(now)
            and self.store_health.ready(now)
            and self.signals.ready()
        )

    def _forget(self, record: Record) -> None:
        """Drop what caches could hold an allow for ``record``'s subject or session: verified
        tokens, introspection answers, remembered decisions (the next check asks the view
        first anyway; nothing stale is kept past an event)."""
        if record.effect is Effect.DEVICE:
            return  # neither cache holds device evidence
        state = self.state

        def match(principal: Principal) -> bool:
            return record.key in principal_keys(principal)

        if state.verifier.cache is not None:
            state.verifier.cache.discard(match)
        for introspector in state.verifier.introspectors.values():
            introspector.cache.discard(match)
        state.memo.discard(match)

    def now(self) -> float:
        return self._clock()

    async def __aenter__(self) -> Runtime:
        self.telemetry.start()
        await self.store_health.start()
        for source in self._sources.values():
            await source.start()
        for introspector in self._introspectors.values():
            await introspector.start()
        if self.state.evidence is not None:
            await self.state.evidence.start()
        if self.assertions is not None:
            await self.assertions.start()
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
        for introspector in self._introspectors.values():
            await introspector.aclose()
        if self.state.evidence is not None:
            await self.state.evidence.aclose()
        if self.assertions is not None:
            await self.assertions.aclose()
        await self.signals.aclose()
        await self._client.aclose()
        await self.store_health.aclose()
        await self.store.aclose()
        self.telemetry.close()
