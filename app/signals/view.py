"""The revocation view: every live record, indexed by match key, in this process.

The check path asks it twice, synchronously and without I/O (a few dict lookups, nothing at
all while the view is empty): after token verification (``check_principal``: is this token's
user, session, email, application or the token itself revoked? did the assurance level or
claims change since it was issued?) and after the evidence is gathered (``check_device``).
The shared store keeps it current (app/signals/sync.py); it never forgets a record before its
``until``, and drops it after.

Precedence, when several records match:

- revocations: any record whose time is at or after the token's ``iat`` refuses it; the reason
  reported is the first of ``access_revoked`` (the operator's kill switch),
  ``account_disabled``, ``credential_change_required``, ``credential_changed``,
  ``session_revoked``;
- devices: a live operator revocation refuses (``device_revoked``) whatever else is known;
  otherwise the latest compliance event decides, ``not-compliant`` winning a tie;
- assurance: the latest event after the token's ``iat``; claims: every change after it, later
  values over earlier ones.

A part of a record that the request cannot show (a device part with no device evidence, a user
part of a device record on an anonymous request) counts as matching for what refuses, and as
not matching for what could lift a refusal or feed a policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from app.identity.principal import Principal
from app.reasons import Reason
from app.signals.records import Effect, Record

_PRECEDENCE: Final = (
    Reason.ACCESS_REVOKED,
    Reason.ACCOUNT_DISABLED,
    Reason.CREDENTIAL_CHANGE_REQUIRED,
    Reason.CREDENTIAL_CHANGED,
    Reason.SESSION_REVOKED,
)
_RANK: Final = {reason: rank for rank, reason in enumerate(_PRECEDENCE)}
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PrincipalSignals:
    """What the view knows about one verified token now."""

    refusal: Reason | None = None
    principal: Principal | None = None  # replaced when an assurance decrease voids auth claims
    variables: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)  # CEL ``signals``
    record: Record | None = None  # the record that refused (telemetry)


NOTHING: Final = PrincipalSignals()


def principal_keys(principal: Principal) -> frozenset[str]:
    """The match keys (app/signals/records.py) of a verified token."""
    iss = principal.issuer
    keys = {f"u|{iss}|{principal.subject}"}
    claims = principal.claims
    sid = claims.get("sid")
    if isinstance(sid, str) and sid:
        keys.add(f"s|{iss}|{sid}")
    email = claims.get("email")
    if isinstance(email, str) and email:
        keys.add(f"e|{iss}|{email.lower()}")
    if principal.token_id:
        keys.add(f"t|{iss}|{principal.token_id}")
    if principal.client_id:
        keys.add(f"c|{iss}|{principal.client_id}")
    return frozenset(keys)


def _holds(record: Record, keys: frozenset[str] | None, device: str | None, unknown: bool) -> bool:
    """Do the record's ``also`` groups match? ``unknown``: what a part the request cannot show
    counts as."""
    for group in record.also:
        if group[0].startswith("d|"):
            if device is None:
                if not unknown:
                    return False
            elif f"d|{device}" not in group:
                return False
        elif keys is None:
            if not unknown:
                return False
        elif keys.isdisjoint(group):
            return False
    return True


class RevocationView:
    """Not thread-safe: used from the one event loop that runs checks and receives events."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[str, Record]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def records(self) -> Iterator[Record]:
        for bucket in self._by_key.values():
            yield from bucket.values()

    def apply(self, record: Record, now: float) -> bool:
        """Add ``record``; False when it is already known or no longer matters (idempotent:
        the same record from the stream and from a re-read is applied once)."""
        if record.until <= now:
            return False
        bucket = self._by_key.setdefault(record.key, {})
        if record.store_key in bucket:
            return False
        bucket[record.store_key] = record
        self._count += 1
        return True

    def sweep(self, now: float) -> int:
        """Drop every record past its ``until``; returns how many."""
        dropped = 0
        for key in list(self._by_key):
            bucket = self._by_key[key]
            for store_key in [k for k, r in bucket.items() if r.until <= now]:
                del bucket[store_key]
                dropped += 1
            if not bucket:
                del self._by_key[key]
        self._count -= dropped
        return dropped

    # -- the check path ----------------------------------------------------------------------

    def check_principal(
        self, principal: Principal, now: float, device: str | None = None
    ) -> PrincipalSignals:
        """Revocations, assurance and claims changes that apply to ``principal``'s token."""
        if not self._count:
            return NOTHING
        keys = principal_keys(principal)
        issued = principal.issued_at
        refusal: Record | None = None
        assurance: Record | None = None
        changes: list[Record] = []
        for key in keys:
            bucket = self._by_key.get(key)
            if not bucket:
                continue
            for record in bucket.values():
                if record.until <= now or issued > record.at:
                    continue
                effect = record.effect
                if effect is Effect.REVOKE:
                    if _holds(record, keys, device, True) and (
                        refusal is None or _rank(record) < _rank(refusal)
                    ):
                        refusal = record
                elif effect is Effect.ASSURANCE:
                    decrease = record.details.get("change_direction") == "decrease"
                    if _holds(record, keys, device, decrease) and (
                        assurance is None or record.at > assurance.at
                    ):
                        assurance = record
                elif effect is Effect.CLAIMS and _holds(record, keys, device, False):
                    changes.append(record)
        if refusal is not None:
            return PrincipalSignals(refusal=refusal.reason, record=refusal)
        if assurance is None and not changes:
            return NOTHING
        variables: dict[str, Any] = {}
        if assurance is not None:
            variables["assurance"] = {
                **{k: v for k, v in assurance.details.items() if v is not None},
                "at": int(assurance.at),
            }
            if assurance.details.get("change_direction") == "decrease":
                # The token's authentication claims describe a level the IdP says is gone:
                # every ``auth:`` requirement asks for a new authentication (RFC 9470).
                principal = dataclasses.replace(
                    principal, acr=None, amr=frozenset(), auth_time=None
                )
        if changes:
            merged: dict[str, Any] = {}
            for record in sorted(changes, key=lambda r: r.at):
                merged.update(record.details)
            variables["claims"] = merged
            variables["claims_changed_at"] = int(max(r.at for r in changes))
        return PrincipalSignals(principal=principal, variables=MappingProxyType(variables))

    def check_device(
        self, device: str, principal: Principal | None, now: float
    ) -> tuple[Reason, Record] | None:
        """The refusal for requests with ``device``'s evidence, if its state refuses them."""
        if not self._count:
            return None
        bucket = self._by_key.get(f"d|{device}")
        if not bucket:
            return None
        keys = None if principal is None else principal_keys(principal)
        latest: Record | None = None
        for record in bucket.values():
            if record.until <= now or record.effect is not Effect.DEVICE:
                continue
            refuses = not record.compliant
            if not _holds(record, keys, device, refuses):
                continue
            if record.operator and refuses:
                assert record.reason is not None
                return record.reason, record
            if latest is None or (record.at, refuses) > (latest.at, not latest.compliant):
                latest = record
        if latest is None or latest.compliant or latest.reason is None:
            return None
        return latest.reason, latest


def _rank(record: Record) -> int:
    return _RANK.get(record.reason, len(_RANK)) if record.reason is not None else len(_RANK)
