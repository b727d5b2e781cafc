"""What each event does to which tokens (app/signals/effects.py, app/signals/view.py): the
documented table, precedence and lifetimes, decided with a fixed clock."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from app.identity.principal import Principal
from app.reasons import Reason
from app.signals.effects import Scope, records_for
from app.signals.errors import SetError, SetErrorCode
from app.signals.events import CAEP, RISC, parse_event
from app.signals.set_token import VerifiedSet
from app.signals.subjects import parse_subject
from app.signals.view import RevocationView

ISS = "https://idp.example.com"
NOW = 1_700_000_000.0
SCOPE = Scope(name="idp", issuers=(ISS,), token_lifetime=960.0, device_ttl=3600.0)


def principal(sub: str = "alice", iat: float = NOW - 60, **claims: Any) -> Principal:
    return Principal(
        issuer=ISS,
        subject=sub,
        groups=frozenset(),
        scopes=frozenset(),
        audience=("api",),
        expires_at=int(iat + 300),
        issued_at=int(iat),
        claims=MappingProxyType({"sub": sub, **claims}),
        token_id=claims.get("jti"),
        acr=claims.get("acr"),
        auth_time=claims.get("auth_time"),
    )


def event_set(
    uri: str, payload: dict[str, Any], sub_id: dict[str, Any], iat: float = NOW
) -> VerifiedSet:
    return VerifiedSet(
        issuer=ISS,
        jti=f"jti-{uri}-{sorted(payload.items())}-{sorted(sub_id)}",
        iat=iat,
        events=(parse_event(uri, payload),),
        subject=parse_subject(sub_id),
    )


def view_after(*sets: VerifiedSet, scope: Scope = SCOPE, now: float = NOW) -> RevocationView:
    view = RevocationView()
    for verified in sets:
        for record in records_for(verified, scope, now):
            view.apply(record, now)
    return view


USER = {"format": "iss_sub", "iss": ISS, "sub": "alice"}


@pytest.mark.parametrize(
    ("uri", "payload", "reason"),
    [
        (CAEP + "session-revoked", {}, Reason.SESSION_REVOKED),
        (RISC + "sessions-revoked", {}, Reason.SESSION_REVOKED),
        (RISC + "account-disabled", {"reason": "hijacking"}, Reason.ACCOUNT_DISABLED),
        (RISC + "account-purged", {}, Reason.ACCOUNT_DISABLED),
        (
            CAEP + "credential-change",
            {"credential_type": "password", "change_type": "update"},
            Reason.CREDENTIAL_CHANGED,
        ),
        (RISC + "account-credential-change-required", {}, Reason.CREDENTIAL_CHANGE_REQUIRED),
    ],
)
def test_revocations_refuse_tokens_issued_before_the_event(
    uri: str, payload: dict[str, Any], reason: Reason
) -> None:
    view = view_after(event_set(uri, {**payload, "event_timestamp": NOW - 10}, USER))
    assert view.check_principal(principal(iat=NOW - 60), NOW).refusal is reason
    assert view.check_principal(principal(iat=NOW - 10), NOW).refusal is reason  # same second
    assert view.check_principal(principal(iat=NOW - 9), NOW).refusal is None  # signed in after
    assert view.check_principal(principal("bob"), NOW).refusal is None
    # the record lives until every token it could refuse has expired, then goes
    assert view.check_principal(principal(iat=NOW - 60), NOW - 10 + 959).refusal is reason
    assert view.check_principal(principal(iat=NOW - 60), NOW - 10 + 961).refusal is None


def test_a_session_event_refuses_that_session_only() -> None:
    sub_id = {
        "format": "complex",
        "session": {"format": "opaque", "id": "s1"},
        "user": USER,
        "tenant": {"format": "opaque", "id": "t"},
    }
    view = view_after(event_set(CAEP + "session-revoked", {}, sub_id))
    assert view.check_principal(principal(sid="s1"), NOW).refusal is Reason.SESSION_REVOKED
    assert view.check_principal(principal(sid="s2"), NOW).refusal is None
    assert view.check_principal(principal("bob", sid="s1"), NOW).refusal is None  # user part


def test_a_simple_opaque_session_subject_matches_sid_or_sub() -> None:
    view = view_after(event_set(CAEP + "session-revoked", {}, {"format": "opaque", "id": "x1"}))
    assert view.check_principal(principal(sid="x1"), NOW).refusal is Reason.SESSION_REVOKED
    assert view.check_principal(principal("x1"), NOW).refusal is Reason.SESSION_REVOKED
    assert view.check_principal(principal(sid="x2"), NOW).refusal is None


def test_email_and_token_subjects() -> None:
    view = view_after(
        event_set(RISC + "account-disabled", {}, {"format": "email", "email": "Alice@Example.com"}),
        event_set(CAEP + "session-revoked", {}, {"format": "jwt_id", "iss": ISS, "jti": "t-1"}),
    )
    assert (
        view.check_principal(principal(email="alice@example.com"), NOW).refusal
        is Reason.ACCOUNT_DISABLED
    )
    assert view.check_principal(principal("bob", jti="t-1"), NOW).refusal is Reason.SESSION_REVOKED
    assert view.check_principal(principal("bob", jti="t-2"), NOW).refusal is None


def test_precedence_of_revocation_reasons() -> None:
    view = view_after(
        event_set(CAEP + "session-revoked", {}, USER),
        event_set(RISC + "account-disabled", {}, USER),
    )
    assert view.check_principal(principal(), NOW).refusal is Reason.ACCOUNT_DISABLED


def device_event(device: str, compliant: bool, at: float) -> VerifiedSet:
    payload = {
        "current_status": "compliant" if compliant else "not-compliant",
        "previous_status": "not-compliant" if compliant else "compliant",
        "event_timestamp": at,
    }
    return event_set(
        CAEP + "device-compliance-change",
        payload,
        {"format": "complex", "device": {"format": "opaque", "id": device}},
    )


def test_the_latest_device_event_decides_and_not_compliant_wins_a_tie() -> None:
    off = view_after(device_event("d1", False, NOW - 5))
    assert off.check_device("d1", None, NOW) is not None
    assert off.check_device("d2", None, NOW) is None
    back = view_after(device_event("d1", False, NOW - 5), device_event("d1", True, NOW - 4))
    assert back.check_device("d1", None, NOW) is None
    late = view_after(device_event("d1", True, NOW - 4), device_event("d1", False, NOW - 3))
    assert late.check_device("d1", None, NOW) is not None
    tie = view_after(device_event("d1", True, NOW - 4), device_event("d1", False, NOW - 4))
    refused = tie.check_device("d1", None, NOW)
    assert refused is not None and refused[0] is Reason.DEVICE_NONCOMPLIANT
    assert off.check_device("d1", None, NOW - 5 + 3601) is None  # device_state_ttl


def test_assurance_decrease_voids_authentication_claims_and_feeds_policies() -> None:
    payload = {
        "namespace": "NIST-AAL",
        "current_level": "nist-aal1",
        "previous_level": "nist-aal2",
        "change_direction": "decrease",
    }
    view = view_after(event_set(CAEP + "assurance-level-change", payload, USER))
    said = view.check_principal(principal(acr="aal2", auth_time=int(NOW - 100)), NOW)
    assert said.refusal is None and said.principal is not None
    assert said.principal.acr is None and said.principal.auth_time is None
    assert said.variables["assurance"]["current_level"] == "nist-aal1"
    increase = view_after(
        event_set(
            CAEP + "assurance-level-change", {**payload, "change_direction": "increase"}, USER
        )
    )
    kept = increase.check_principal(principal(acr="aal2"), NOW)
    assert kept.principal is not None and kept.principal.acr == "aal2"


def test_claims_changes_reach_policies_in_order() -> None:
    view = view_after(
        event_set(
            CAEP + "token-claims-change",
            {"claims": {"role": "user", "x": 1}, "event_timestamp": NOW - 5},
            USER,
        ),
        event_set(
            CAEP + "token-claims-change",
            {"claims": {"role": "guest"}, "event_timestamp": NOW - 2},
            USER,
        ),
    )
    said = view.check_principal(principal(), NOW)
    assert said.variables["claims"] == {"role": "guest", "x": 1}
    assert view.check_principal(principal(iat=NOW - 1), NOW).variables == {}


@pytest.mark.parametrize(
    ("scope", "uri", "sub_id", "code"),
    [
        (
            SCOPE,
            CAEP + "session-revoked",
            {"format": "iss_sub", "iss": "https://other", "sub": "a"},
            SetErrorCode.ACCESS_DENIED,
        ),
        (
            Scope("idp", (ISS,), 960.0, 3600.0, events=frozenset()),
            CAEP + "session-revoked",
            USER,
            SetErrorCode.ACCESS_DENIED,
        ),
        (
            Scope("idp", (ISS,), 960.0, 3600.0, critical=frozenset({"tenant"})),
            CAEP + "session-revoked",
            {"format": "complex", "user": USER, "tenant": {"format": "opaque", "id": "t"}},
            SetErrorCode.INVALID_REQUEST,
        ),
        (
            SCOPE,
            CAEP + "session-revoked",
            {"format": "phone_number", "phone_number": "+1"},
            SetErrorCode.INVALID_REQUEST,
        ),
        (
            SCOPE,
            CAEP + "device-compliance-change",
            {"format": "complex", "user": USER},
            SetErrorCode.INVALID_REQUEST,
        ),
    ],
)
def test_what_a_transmitter_may_not_say(
    scope: Scope, uri: str, sub_id: dict[str, Any], code: SetErrorCode
) -> None:
    payload = (
        {"current_status": "not-compliant", "previous_status": "compliant"}
        if "device" in uri
        else {}
    )
    with pytest.raises(SetError) as refused:
        records_for(event_set(uri, payload, sub_id), scope, NOW)
    assert refused.value.code is code


def test_events_dated_in_the_future_start_now_and_old_ones_leave_nothing() -> None:
    future = records_for(
        event_set(CAEP + "session-revoked", {"event_timestamp": NOW + 3600}, USER), SCOPE, NOW
    )
    assert [r.at for r in future] == [NOW]
    stale = records_for(
        event_set(CAEP + "session-revoked", {"event_timestamp": NOW - 5000}, USER), SCOPE, NOW
    )
    assert stale == []
