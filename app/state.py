"""Runtime state: everything a check needs, built once at start and swapped as a whole."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import httpx

from app.identity.jwks import KeySource
from app.identity.verify import TokenVerifier, build_key_sources
from app.policy.index import CompiledPolicies
from app.policy.loader import load_policy_dir
from app.settings import Settings

log = logging.getLogger("ztauthz.state")


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """An immutable snapshot; a reload builds a new one and swaps the reference."""

    settings: Settings
    verifier: TokenVerifier
    policies: CompiledPolicies


class Runtime:
    """Owns the long-lived resources (HTTP client, key caches) behind the current state."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        # Loading policies first: an invalid policy directory stops the start (PolicyLoadError).
        self._policies = load_policy_dir(settings.policies)
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self._sources: dict[str, KeySource] = dict(
            build_key_sources(settings.issuers, self._client, clock)
        )
        self.state = RuntimeState(
            settings=settings,
            verifier=TokenVerifier(settings.issuers, self._sources, settings.token.max_bytes),
            policies=self._policies,
        )

    def is_ready(self) -> bool:
        return self.state.verifier.is_ready(self._clock())

    def now(self) -> float:
        return self._clock()

    async def __aenter__(self) -> Runtime:
        for source in self._sources.values():
            await source.start()
        log.info(
            "runtime started",
            extra={"policy_version": self._policies.version, "rules": self._policies.rule_count},
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
        await self._client.aclose()
