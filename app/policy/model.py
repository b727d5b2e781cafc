"""Compiled policy rules: immutable values the loader builds once and evaluation only reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from app.policy.cel import CelCondition

Effect = Literal["allow", "deny"]
Scalar = str | int | float | bool

ANY_PATH = "/**"


@dataclass(frozen=True, slots=True)
class ClaimCondition:
    """The claim at ``name`` (a top-level name or a dotted path) equals one of ``values``;
    a list-valued claim must contain one of them."""

    name: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Subject:
    """Conditions on the principal; every condition that is set must hold (AND).

    ``None`` (or an empty ``claims``) means the condition is not part of the rule.
    """

    issuers_any: frozenset[str] | None = None
    subjects_any: frozenset[str] | None = None
    groups_any: frozenset[str] | None = None
    groups_all: frozenset[str] | None = None
    scopes_any: frozenset[str] | None = None
    scopes_all: frozenset[str] | None = None
    claims: tuple[ClaimCondition, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthRequirement:
    """Step-up: how strong and how recent the authentication must be (``auth:``).

    ``acr_any`` keeps the policy's order: it becomes the challenge's ``acr_values``.
    """

    acr_any: tuple[str, ...] | None = None
    amr_all: frozenset[str] | None = None
    max_age: int | None = None  # seconds since auth_time


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Local days and hours in a named time zone (``time_window:``).

    ``days`` are ISO weekdays (1 = Monday ... 7 = Sunday) of the local date at the moment of
    the request; ``start``/``end`` are minutes after local midnight, ``start`` inclusive and
    ``end`` exclusive; ``end <= start`` means the window runs past midnight.
    """

    timezone: ZoneInfo
    days: frozenset[int]
    start: int = 0
    end: int = 24 * 60


@dataclass(frozen=True, slots=True)
class DeviceRequirement:
    """Device posture a rule requires (``device:``); every attribute that is set must hold.

    ``min_os_version`` maps lower-case OS names to the lowest accepted version (a tuple of
    integers): the device's OS must be one of them, at least that version. ``sources_any``
    limits where the device evidence may come from (``device_token``, ``token_claims``,
    ``client_certificate``).
    """

    managed: bool | None = None
    compliant: bool | None = None
    disk_encrypted: bool | None = None
    screen_lock: bool | None = None
    max_risk: float | None = None
    max_posture_age: int | None = None  # seconds since the posture was assessed
    min_os_version: tuple[tuple[str, tuple[int, ...]], ...] | None = None
    sources_any: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class LocationRequirement:
    """Where the request must (not) come from (``location:``). ``claim_matches_ip``: a signed
    location claim is present and names the same country as the client IP."""

    countries_any: frozenset[str] | None = None
    countries_none: frozenset[str] | None = None
    networks_any: frozenset[str] | None = None
    networks_none: frozenset[str] | None = None
    claim_matches_ip: bool = False


@dataclass(frozen=True, slots=True)
class WorkloadRequirement:
    """Which workload (mTLS SPIFFE identity) may call (``workload:``)."""

    spiffe_ids_any: frozenset[str] | None = None
    trust_domains_any: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class EvidenceRequirement:
    """A rule's evidence conditions; ``None`` parts are not part of the rule."""

    device: DeviceRequirement | None = None
    location: LocationRequirement | None = None
    workload: WorkloadRequirement | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of one policy, with where it was written.

    ``order`` is the rule's global position (files sorted by path, then documents, then rules),
    the tie-breaker that makes every result deterministic. ``hosts`` are normalized (an entry
    ``*.example.com`` is a single-label wildcard); empty means any host. ``methods`` ``None``
    means any method; ``paths`` are validated patterns (``("/**",)`` when the rule gave none).
    """

    id: str
    policy: str
    effect: Effect
    order: int
    anonymous: bool = False
    hosts: tuple[str, ...] = ()
    methods: frozenset[str] | None = None
    paths: tuple[str, ...] = (ANY_PATH,)
    subject: Subject | None = None
    file: str = ""
    line: int = 0
    time_window: TimeWindow | None = None
    grant: str | None = None  # allow rules only: an active grant of this name is required
    when: CelCondition | None = field(default=None, compare=False)
    auth: AuthRequirement | None = None  # allow rules only: step-up
    dry_run: bool = False  # from a ``mode: dry-run`` policy: evaluated and logged, not enforced
    evidence: EvidenceRequirement | None = None  # device:, location:, workload:
    # sender_constrained: the token must be bound to one of these (dpop, mtls); allow rules only
    sender_constrained: frozenset[str] | None = None
    # Allow rules only: the token's issuer must confirm it active (RFC 7662) before it allows.
    high_risk: bool = False
    # Derived once, here, and nowhere else: does nothing but the request line and the principal
    # decide whether the rule applies (no time window, grant, CEL condition, step-up,
    # evidence or sender-constraint condition)? Evaluation takes its fast path on it, and the decision memo
    # (app/policy/memo.py) remembers only decisions that plain rules made.
    plain: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        plain = (
            self.time_window is None
            and self.grant is None
            and self.when is None
            and self.auth is None
            and self.evidence is None
            # The token's binding (its cnf claim) decides: not a fact the memo keys on.
            and self.sender_constrained is None
        )
        object.__setattr__(self, "plain", plain)

    @property
    def workload_authenticates(self) -> bool:
        """An allow rule with ``workload:`` can apply without a token: the mTLS certificate
        Envoy verified is the caller's identity."""
        return self.evidence is not None and self.evidence.workload is not None

    @property
    def conditional(self) -> bool:
        """Does anything beyond host, method and path decide whether the rule applies?"""
        return (
            self.subject is not None
            or self.time_window is not None
            or self.grant is not None
            or self.when is not None
            or self.auth is not None
            or self.evidence is not None
            or self.sender_constrained is not None
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """A time-bound elevation (``kind: Grant``), reviewed and merged like the policies.

    Who: ``subject`` (optionally pinned to ``issuer``) or members of ``group``. What: the
    named ``grant`` rules may require, and/or extra ``groups`` and ``scopes``. It counts only
    while ``not_before <= now < expires`` (epoch seconds).
    """

    name: str
    not_before: float
    expires: float
    approved_by: str
    reason: str
    subject: str | None = None
    group: str | None = None
    issuer: str | None = None
    grant: str | None = None
    groups: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    ticket: str | None = None
    file: str = ""
    line: int = 0

    def active(self, now: float) -> bool:
        return self.not_before <= now < self.expires
