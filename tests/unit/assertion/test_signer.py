"""Signing on allow: what the assertion says, that it verifies as an upstream verifies it, when
a signed assertion is reused (and never once it nears expiry), and key rotation."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.assertion import ASSERTION_TYPE, AssertionSigner
from app.assertion.claims import assertion_claims
from app.decision import Decision
from app.evidence.model import Device, Evidence, Location, Workload
from app.reasons import Reason
from app.settings import AssertionRoute, ConfigError
from app.telemetry.events import Event
from tests.unit.assertion.assertion_support import (
    AUDIENCE,
    ISSUER,
    NOW,
    allow,
    principal,
    request,
    verify,
    write_key,
)
from tests.unit.assertion.assertion_support import settings as assertion_settings


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Event, dict[str, Any]]] = []

    def __call__(self, event: Event, /, **fields: Any) -> None:
        self.events.append((event, fields))

    def named(self, event: Event) -> list[dict[str, Any]]:
        return [fields for name, fields in self.events if name is event]


def signer_for(keys: Path, emit: Recorder | None = None, **overrides: Any) -> AssertionSigner:
    return AssertionSigner.load(
        assertion_settings(keys, **overrides),
        emit=emit if emit is not None else Recorder(),
        clock=lambda: NOW,
    )


def token_of(decision: Decision) -> str:
    assert decision.assertion is not None
    return decision.assertion.token


def claims_of(token: str) -> dict[str, Any]:
    unverified: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return unverified


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    write_key(directory, "2025-01.pem")
    return directory


# --- what the assertion says -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "algorithm"), [("ec", "ES256"), ("ed25519", "EdDSA"), ("rsa", "RS256")]
)
def test_an_allow_carries_an_assertion_the_published_jwks_verifies(
    tmp_path: Path, kind: str, algorithm: str
) -> None:
    write_key(tmp_path, "k1.pem", kind)  # type: ignore[arg-type]
    signer = signer_for(tmp_path)
    decided = signer.attach(allow(principal()), request(), NOW)
    assert decided.assertion is not None
    assert decided.assertion.header == "x-auth-assertion"
    header = jwt.get_unverified_header(decided.assertion.token)
    assert header == {"alg": algorithm, "kid": "k1", "typ": ASSERTION_TYPE}
    claims = verify(decided.assertion.token, signer.jwks()[0])
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == "alice"
    assert claims["sub_id"] == {
        "format": "iss_sub",
        "iss": "https://idp.example.com",
        "sub": "alice",
    }
    assert claims["client_id"] == "web"
    assert claims["groups"] == ["auditors", "finance"]
    assert claims["scope"] == "invoices:list invoices:read"
    assert claims["iat"] == int(NOW)
    assert claims["exp"] == int(NOW) + 60
    assert len(claims["jti"]) == 32
    assert claims["decision"] == {
        "id": "d-1",
        "policy_version": "sha256:v1",
        "rule": "invoices-read",
        "policy": "invoices",
    }
    assert "evidence" not in claims  # no evidence source configured


def test_the_evidence_used_and_where_each_piece_came_from() -> None:
    evidence = Evidence(
        device=Device(
            "laptop-7",
            "device_token",
            managed=True,
            compliant=True,
            os_name="macos",
            os_version="14.5",
            risk_score=12.0,
            assessed_at=NOW - 30.5,
        ),
        location=Location(
            client_ip="203.0.113.10",
            networks=frozenset({"corp", "eu"}),
            ip_country="DE",
            claim_country="FR",
            country="DE",
        ),
        workload=Workload("spiffe://example.org/ns/a/sa/b", "example.org", "xfcc"),
    )
    claims = assertion_claims(
        allow(
            principal(acr="phr", amr=frozenset({"pwd", "hwk"}), auth_time=int(NOW) - 5),
            evidence=evidence,
        ),
        issuer=ISSUER,
        audience=AUDIENCE,
        issued_at=1,
        expires_at=2,
        jti="j",
    )
    assert claims["evidence"] == {
        "device": {
            "id": "laptop-7",
            "source": "device_token",
            "managed": True,
            "compliant": True,
            "os_name": "macos",
            "os_version": "14.5",
            "risk_score": 12.0,
            "assessed_at": int(NOW - 30.5),
        },
        "location": {
            "client_ip": "203.0.113.10",
            "networks": ["corp", "eu"],
            "country": "DE",
            "country_source": "geoip",
            "ip_country": "DE",
            "claim_country": "FR",
        },
        "workload": {
            "id": "spiffe://example.org/ns/a/sa/b",
            "trust_domain": "example.org",
            "source": "xfcc",
        },
    }
    assert (claims["acr"], claims["amr"], claims["auth_time"]) == (
        "phr",
        ["hwk", "pwd"],
        int(NOW) - 5,
    )


def test_a_country_from_a_signed_claim_says_so_and_unknowns_are_absent() -> None:
    evidence = Evidence(
        device_problem=Reason.DEVICE_STALE,
        location=Location(claim_country="NL", country="NL"),
    )
    claims = assertion_claims(
        allow(principal(), evidence=evidence),
        issuer=ISSUER,
        audience=AUDIENCE,
        issued_at=1,
        expires_at=2,
        jti="j",
    )
    assert claims["evidence"] == {
        "device_problem": "device_stale",
        "location": {"country": "NL", "country_source": "token_claim", "claim_country": "NL"},
    }


def test_a_workload_that_authenticated_with_its_certificate_is_the_subject() -> None:
    workload = Workload("spiffe://example.org/ns/billing/sa/worker", "example.org", "peer")
    claims = assertion_claims(
        allow(None, evidence=Evidence(workload=workload)),
        issuer=ISSUER,
        audience=AUDIENCE,
        issued_at=1,
        expires_at=2,
        jti="j",
    )
    assert claims["sub"] == workload.id
    assert claims["sub_id"] == {"format": "uri", "uri": workload.id}
    assert "groups" not in claims


def test_an_anonymous_allow_names_no_subject(keys: Path) -> None:
    signer = signer_for(keys)
    claims = verify(
        token_of(signer.attach(allow(None), request("x.example", "/public/a"), NOW)),
        signer.jwks()[0],
    )
    assert "sub" not in claims and "sub_id" not in claims and "groups" not in claims
    assert claims["decision"]["rule"] == "invoices-read"


def test_an_assertion_never_outlives_the_token_it_was_made_from(keys: Path) -> None:
    signer = signer_for(keys)
    soon = principal(expires_at=int(NOW) + 20)
    claims = claims_of(token_of(signer.attach(allow(soon), request(), NOW)))
    assert claims["exp"] == int(NOW) + 20
    # A token accepted within the issuer's leeway (already past exp): one second at most.
    late = principal(expires_at=int(NOW) - 10)
    claims = claims_of(token_of(signer.attach(allow(late), request(), NOW)))
    assert claims["exp"] == int(NOW) + 1


def test_the_audience_follows_the_route(keys: Path) -> None:
    routes = [
        AssertionRoute(audience="https://billing.internal", hosts=["billing.example.com"]),
        AssertionRoute(audience="https://reports.internal", path_prefixes=["/reports"]),
        AssertionRoute(
            audience="https://tenants.internal",
            hosts=["*.tenants.example.com"],
            path_prefixes=["/api/v2"],
        ),
    ]
    signer = signer_for(keys, routes=routes)
    cases = [
        ("billing.example.com", "/anything", "https://billing.internal"),
        ("BILLING.example.com:443", "/x", "https://billing.internal"),
        ("api.example.com", "/reports", "https://reports.internal"),
        ("api.example.com", "/reports/2025/q1?x=1", "https://reports.internal"),
        ("api.example.com", "/reportsx", AUDIENCE),  # whole segments only
        ("acme.tenants.example.com", "/api/v2/users", "https://tenants.internal"),
        ("acme.tenants.example.com", "/api/v1/users", AUDIENCE),
        ("a.b.tenants.example.com", "/api/v2/users", AUDIENCE),  # one label only
        ("api.example.com", "/invoices/1", AUDIENCE),
    ]
    for host, path, audience in cases:
        token = token_of(signer.attach(allow(principal()), request(host, path), NOW))
        assert verify(token, signer.jwks()[0], audience=audience)["aud"] == audience, (host, path)


@pytest.mark.parametrize(
    ("route", "problem"),
    [
        ({"hosts": ["bad host"]}, "assertion.routes[0].hosts[0]: invalid host"),
        ({"path_prefixes": ["/a/../b"]}, "assertion.routes[0].path_prefixes[0]: dot segment"),
        (
            {"path_prefixes": ["/a%41"]},
            "assertion.routes[0].path_prefixes[0]: give the path as policies match it: /aA",
        ),
    ],
)
def test_a_route_that_could_never_match_is_a_configuration_error(
    keys: Path, route: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        signer_for(keys, routes=[AssertionRoute(audience="x", **route)])
    assert caught.value.problems == [problem] or caught.value.problems[0].startswith(problem)


# --- reuse -------------------------------------------------------------------------------------


def test_the_same_claims_reuse_one_signed_assertion(keys: Path) -> None:
    signer = signer_for(keys)
    first = token_of(signer.attach(allow(principal(), decision_id="d-1"), request(), NOW))
    again = token_of(signer.attach(allow(principal(), decision_id="d-2"), request(), NOW + 10))
    assert again == first
    assert (signer.counts.reused, signer.counts.signed) == (1, 1)
    # What reuse means: the assertion names the decision that minted it, not this request's
    # (the x-auth-decision-id header does).
    assert claims_of(again)["decision"]["id"] == "d-1"


def _variants() -> list[tuple[str, Decision, str, str]]:
    evidence = Evidence(location=Location(client_ip="203.0.113.10", country="DE", ip_country="DE"))
    moved = Evidence(location=Location(client_ip="198.51.100.20", country="NL", ip_country="NL"))
    return [
        ("subject", allow(principal(subject="bob")), "api.example.com", "/invoices/1"),
        (
            "groups",
            allow(principal(groups=frozenset({"finance"}))),
            "api.example.com",
            "/invoices/1",
        ),
        ("scopes", allow(principal(scopes=frozenset())), "api.example.com", "/invoices/1"),
        (
            "issuer",
            allow(principal(issuer="https://other.example")),
            "api.example.com",
            "/invoices/1",
        ),
        (
            "token expiry",
            allow(principal(expires_at=int(NOW) + 901)),
            "api.example.com",
            "/invoices/1",
        ),
        ("rule", allow(principal(), rule="other-rule"), "api.example.com", "/invoices/1"),
        (
            "policy version",
            allow(principal(), version="sha256:v2"),
            "api.example.com",
            "/invoices/1",
        ),
        ("evidence", allow(principal(), evidence=evidence), "api.example.com", "/invoices/1"),
        ("other evidence", allow(principal(), evidence=moved), "api.example.com", "/invoices/1"),
        ("audience", allow(principal()), "billing.example.com", "/invoices/1"),
        ("anonymous", allow(None), "api.example.com", "/invoices/1"),
    ]


def test_anything_the_claims_depend_on_gets_its_own_assertion(keys: Path) -> None:
    routes = [AssertionRoute(audience="https://billing.internal", hosts=["billing.example.com"])]
    signer = signer_for(keys, routes=routes)
    base = token_of(signer.attach(allow(principal()), request(), NOW))
    seen = {base: "base"}
    for name, decision, host, path in _variants():
        token = token_of(signer.attach(decision, request(host, path), NOW))
        assert token not in seen, f"{name} reused the assertion of {seen.get(token)}"
        seen[token] = name
        # ... and that assertion says what this decision says.
        claims = claims_of(token)
        expected = assertion_claims(
            decision,
            issuer=ISSUER,
            audience=claims["aud"],
            issued_at=claims["iat"],
            expires_at=claims["exp"],
            jti=claims["jti"],
        )
        assert claims == json.loads(json.dumps(expected)), name


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.floats(min_value=-5, max_value=40, allow_nan=False), min_size=1, max_size=40)
)
def test_a_reused_assertion_has_half_its_lifetime_left_and_no_future_iat(
    tmp_path_factory: pytest.TempPathFactory, steps: list[float]
) -> None:
    keys = tmp_path_factory.mktemp("keys")
    write_key(keys, "k.pem")
    signer = signer_for(keys, lifetime="60s")
    now = NOW
    for step in steps:  # mostly forward; a negative step is the clock set back
        now += step
        claims = claims_of(
            token_of(signer.attach(allow(principal(expires_at=int(NOW) + 3600)), request(), now))
        )
        assert claims["iat"] <= now  # never from the future
        assert claims["exp"] - now >= 30  # never near expiry, never expired
        assert claims["exp"] - claims["iat"] == 60


def test_without_a_cache_every_allow_signs_its_own(keys: Path) -> None:
    signer = signer_for(keys, cache_size=0)
    first = token_of(signer.attach(allow(principal(), decision_id="d-1"), request(), NOW))
    second = token_of(signer.attach(allow(principal(), decision_id="d-2"), request(), NOW))
    assert first != second
    assert claims_of(first)["jti"] != claims_of(second)["jti"]
    assert claims_of(second)["decision"]["id"] == "d-2"  # per request


def test_the_cache_is_bounded(keys: Path) -> None:
    signer = signer_for(keys, cache_size=3)
    for n in range(10):
        signer.attach(allow(principal(subject=f"user-{n}")), request(), NOW)
        assert len(signer._cache) <= 3


# --- rotation ----------------------------------------------------------------------------------


def _touch(path: Path, when: float) -> None:
    os.utime(path, (when, when))


def test_rotation_publishes_first_switches_signing_and_old_assertions_still_verify(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    write_key(keys, "2025-01.pem", written_at=NOW - 3600)
    events = Recorder()
    signer = signer_for(keys, events)
    old = token_of(signer.attach(allow(principal()), request(), NOW))
    assert jwt.get_unverified_header(old)["kid"] == "2025-01"

    write_key(keys, "2025-06.pem", "ed25519", written_at=NOW - 1)
    assert signer.reload(NOW) is True
    jwks = signer.jwks()[0]
    assert [k["kid"] for k in json.loads(jwks)["keys"]] == ["2025-01", "2025-06"]
    new = token_of(signer.attach(allow(principal()), request(), NOW))
    assert jwt.get_unverified_header(new)["kid"] == "2025-06"  # the newest signs
    assert verify(old, jwks)["sub"] == "alice"  # the old one still verifies
    assert verify(new, jwks)["sub"] == "alice"
    assert events.named(Event.ASSERTION_KEYS_RELOADED) == [
        {"kids": ("2025-01", "2025-06"), "signing_kid": "2025-06"}
    ]

    (keys / "2025-01.pem").unlink()  # retired once its assertions have expired
    assert signer.reload(NOW) is True
    assert [k["kid"] for k in json.loads(signer.jwks()[0])["keys"]] == ["2025-06"]
    assert signer.reload(NOW) is False  # nothing changed since


def test_a_new_key_signs_only_once_published_for_the_signing_delay(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write_key(keys, "old.pem", written_at=NOW - 3600)
    events = Recorder()
    signer = signer_for(keys, events, signing_delay="5m", jwks_max_age="5m")
    write_key(keys, "new.pem", written_at=NOW)
    assert signer.reload(NOW)
    assert "new" in signer.jwks()[0].decode()  # published at once

    def kid(at: float) -> str:
        header = jwt.get_unverified_header(
            token_of(signer.attach(allow(principal()), request(), at))
        )
        return str(header["kid"])

    assert kid(NOW + 1) == "old"
    assert kid(NOW + 299) == "old"
    assert kid(NOW + 300) == "new"
    assert events.named(Event.ASSERTION_SIGNING_KEY_CHANGED) == [{"kid": "new"}]


def test_a_bad_change_keeps_the_keys_in_force_and_is_reported_once(keys: Path) -> None:
    events = Recorder()
    signer = signer_for(keys, events)
    before = signer.jwks()
    broken = keys / "2025-06.pem"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    assert signer.reload(NOW) is False
    assert signer.reload(NOW) is False
    assert signer.jwks() == before
    rejected = events.named(Event.ASSERTION_KEYS_REJECTED)
    assert rejected == [{"problem": f"{broken}: not a PEM private key (PKCS#8 or traditional)"}]
    verify(token_of(signer.attach(allow(principal()), request(), NOW)), before[0])  # still signs
    write_key(keys, "2025-06.pem", written_at=NOW)  # fixed
    assert signer.reload(NOW) is True


def test_a_key_file_that_cannot_sign_stops_the_start_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("hello")
    with pytest.raises(ConfigError) as caught:
        signer_for(tmp_path)
    assert caught.value.problems == [
        f"assertion.keys: {tmp_path / 'k.pem'}: not a PEM private key (PKCS#8 or traditional)"
    ]


async def test_the_watcher_picks_up_a_new_key(tmp_path: Path) -> None:
    import asyncio

    keys = tmp_path / "keys"
    write_key(keys, "a.pem", written_at=NOW - 3600)
    signer = signer_for(keys, reload_interval="100ms")
    await signer.start()
    try:
        write_key(keys, "b.pem", written_at=NOW - 1)
        for _ in range(100):
            if b'"b"' in signer.jwks()[0]:
                break
            await asyncio.sleep(0.05)
        assert [k["kid"] for k in json.loads(signer.jwks()[0])["keys"]] == ["a", "b"]
    finally:
        await signer.aclose()


def test_a_kubernetes_secret_update_is_picked_up(tmp_path: Path) -> None:
    # The kubelet writes a new timestamped directory, then swaps the ..data link atomically.
    mount = tmp_path / "mount"
    first = mount / "..2025_01_01"
    write_key(first, "2025-01.pem", written_at=NOW - 3600)
    (mount / "..data").symlink_to(first.name)
    (mount / "2025-01.pem").symlink_to("..data/2025-01.pem")
    signer = signer_for(mount)
    second = mount / "..2025_06_01"
    write_key(second, "2025-01.pem", written_at=NOW - 5)  # every file rewritten together
    write_key(second, "2025-06.pem", written_at=NOW - 5)
    (mount / "..data_tmp").symlink_to(second.name)
    (mount / "..data_tmp").replace(mount / "..data")
    (mount / "2025-06.pem").symlink_to("..data/2025-06.pem")
    assert signer.reload(NOW) is True
    assert [k["kid"] for k in json.loads(signer.jwks()[0])["keys"]] == ["2025-01", "2025-06"]
    # Written together: the greatest name is the newest.
    token = token_of(signer.attach(allow(principal()), request(), NOW))
    assert jwt.get_unverified_header(token)["kid"] == "2025-06"
