"""The assertion's claims: a pure function of the decision, its audience and the clock.

Registered claims (RFC 7519 §4.1): ``iss`` (this sidecar's configured name), ``aud`` (the
upstream), ``sub``, ``iat``, ``exp``, ``jti``. The identity: ``sub_id`` (RFC 9493 §4) says
whose subject it is, ``{"format": "iss_sub", "iss": <identity provider>, "sub": ...}`` for a
token (§3.2.3), ``{"format": "uri", "uri": <SPIFFE ID>}`` for a workload that authenticated
with its certificate alone (§3.2.7); ``client_id`` and ``scope`` (a space-separated string) as
RFC 8693 §4.3 and §4.2 define them, ``groups`` (a list); ``acr``, ``amr``, ``auth_time`` as
OpenID Connect Core §2 does. Private claims (RFC 7519 §4.3): ``decision`` (the deciding
decision's id, policy version, rule, policy, grants) and ``evidence`` (the device, location and
workload evidence the policy was evaluated with, each with where it came from). An anonymous
allow carries no ``sub``.

Nothing here reads the clock or a key: ``iat``/``exp``/``jti`` are passed in.
"""

from __future__ import annotations

from typing import Any

from app.decision import Decision
from app.evidence.model import Evidence, Location, device_facts


def _known(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _country_source(location: Location) -> str | None:
    """Where the country policies used came from: the client IP (GeoIP database), or a
    signed location claim (only when ``evidence.location.country_from_claims`` allows it)."""
    if location.country is None:
        return None
    return "geoip" if location.country == location.ip_country else "token_claim"


def evidence_claims(evidence: Evidence) -> dict[str, Any]:
    """The ``evidence`` claim: only what is known (absent means unknown, never a default)."""
    out: dict[str, Any] = {}
    device = evidence.device
    if device is not None:
        out["device"] = device_facts(device)
    if evidence.device_problem is not None:
        # Why a presented device token was not used (e.g. device_stale).
        out["device_problem"] = evidence.device_problem.value
    location = evidence.location
    found = _known(
        {
            # Envoy's peer address, read through the configured trusted proxies only.
            "client_ip": location.client_ip,
            "networks": sorted(location.networks) if location.client_ip is not None else None,
            "country": location.country,
            "country_source": _country_source(location),
            "ip_country": location.ip_country,
            "claim_country": location.claim_country,
        }
    )
    if found:
        out["location"] = found
    workload = evidence.workload
    if workload is not None:
        out["workload"] = {
            "id": workload.id,
            "trust_domain": workload.trust_domain,
            "source": workload.source,  # peer (Envoy's TLS peer) | xfcc (sanitized by Envoy)
        }
    return out


def identity_claims(decision: Decision) -> dict[str, Any]:
    """``sub`` and what the verified token says of it; a workload's SPIFFE ID when the
    certificate alone authenticated; nothing for an anonymous allow."""
    principal = decision.principal
    if principal is None:
        evidence = decision.evidence
        if evidence is None or evidence.workload is None:
            return {}
        workload = evidence.workload.id
        return {"sub": workload, "sub_id": {"format": "uri", "uri": workload}}
    claims: dict[str, Any] = {
        "sub": principal.subject,
        "sub_id": {"format": "iss_sub", "iss": principal.issuer, "sub": principal.subject},
    }
    if principal.client_id is not None:
        claims["client_id"] = principal.client_id
    claims["groups"] = sorted(principal.groups)
    if principal.scopes:
        claims["scope"] = " ".join(sorted(principal.scopes))
    if principal.acr is not None:
        claims["acr"] = principal.acr
    if principal.amr:
        claims["amr"] = sorted(principal.amr)
    if principal.auth_time is not None:
        claims["auth_time"] = principal.auth_time
    return claims


def decision_claims(decision: Decision) -> dict[str, Any]:
    """The ``decision`` claim: which decision issued the assertion and on what grounds."""
    return _known(
        {
            "id": decision.decision_id,
            "policy_version": decision.policy_version,
            "rule": decision.rule_id,
            "policy": decision.policy,
            "grants": list(decision.grants) if decision.grants else None,
        }
    )


def assertion_claims(
    decision: Decision,
    *,
    issuer: str,
    audience: str,
    issued_at: int,
    expires_at: int,
    jti: str,
) -> dict[str, Any]:
    """Every claim of the assertion for an allowed ``decision``."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "iat": issued_at,
        "exp": expires_at,
        "jti": jti,
    }
    claims.update(identity_claims(decision))
    claims["decision"] = decision_claims(decision)
    if decision.evidence is not None:
        claims["evidence"] = evidence_claims(decision.evidence)
    return claims
