"""Decision: the outcome of one check, independent of the transport that renders it."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field, fields
from typing import Any, Final

from app.evidence.model import Evidence
from app.identity.principal import Principal
from app.reasons import Reason, status_of

# An authentication context class reference as a challenge can carry it: visible ASCII without
# '"' or '\\' (RFC 6750 section 3 quoted-string values, RFC 9470 section 3 ``acr_values``).
# The policy loader admits no other acr value; the renderer writes no other.
ACR_VALUE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


@dataclass(frozen=True, slots=True)
class StepUp:
    """What an RFC 9470 challenge asks for: ``acr_values`` and ``max_age`` (seconds)."""

    acr_values: tuple[str, ...] = ()
    max_age: int | None = None


@dataclass(frozen=True, slots=True)
class DryRun:
    """What would have been decided with every dry-run policy enforced: logged, never applied."""

    allow: bool
    reason: Reason
    rule_id: str | None = None
    policy: str | None = None


@dataclass(frozen=True, slots=True)
class SignedAssertion:
    """The signed identity assertion for the upstream (app/assertion/): its header and JWT.
    The JWT is a credential the upstream trusts: never logged, never shown in a repr."""

    header: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class DpopChallenge:
    """What a DPoP challenge tells the client (RFC 9449 §7.1, §9): the proof algorithms
    accepted, and the server nonce to put in the next proof (None: nonces are off)."""

    algs: tuple[str, ...]
    nonce: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: Reason
    decision_id: str
    policy_version: str
    rule_id: str | None = None
    policy: str | None = None
    principal: Principal | None = None
    grants: tuple[str, ...] = ()  # names of the access grants the decision relied on
    dry_run: DryRun | None = None  # set when some policy runs in dry-run mode
    candidate: DryRun | None = None  # what the candidate policy directory would have decided
    step_up: StepUp | None = None  # the RFC 9470 challenge's parameters (step-up authentication)
    evidence: Evidence | None = None  # what was gathered (None: no evidence source configured)
    # Set on allow by the Checker when ``assertion.enabled``; rendered as one upstream header.
    assertion: SignedAssertion | None = None
    dpop: DpopChallenge | None = None  # set on 401s that answer with a DPoP challenge

    @property
    def status(self) -> int:
        return status_of(self.reason)

    def with_assertion(self, assertion: SignedAssertion) -> Decision:
        """This decision carrying ``assertion``: ``dataclasses.replace`` at a third of its cost
        (it runs on every allow when the assertion is enabled)."""
        values: list[Any] = list(_ALL_FIELDS(self))
        values[_ASSERTION_AT] = assertion
        return Decision(*values)  # every field, in order


_NAMES = tuple(f.name for f in fields(Decision))
_ALL_FIELDS = operator.attrgetter(*_NAMES)
_ASSERTION_AT = _NAMES.index("assertion")
