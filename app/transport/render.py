"""Decision -> (status, headers, body, headers to remove), shared by every transport.

Identity headers for the upstream (the signed assertion's too) are always either set by ztauthz
or named for removal, so a client can never smuggle one through Envoy (Envoy only overwrites the
headers a response carries; the headers to remove make it drop the others). Each transport only puts this one rendering on
its wire: HTTP as the response plus ``x-envoy-auth-headers-to-remove``, gRPC as a CheckResponse
with ``headers_to_remove``.

An allow's answer is the same for every check of the same verified principal on the same rule
and policy version (without evidence or a signed assertion), but for its decision id: from the
second such allow on, those headers come from an ``AllowTemplate`` kept per (principal, rule,
version), and each transport keeps its own encoding of them on the template (``wire``), so that
only the decision id is encoded per check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote

import orjson

from app.decision import ACR_VALUE, Decision
from app.http_facts import DPOP_NONCE, METHOD_ORDER
from app.identity.dpop import CHALLENGE_ERRORS
from app.identity.principal import Principal
from app.reasons import Reason, describe
from app.settings import ASSERTION_HEADER, Response

SUBJECT = "x-auth-subject"
ISSUER = "x-auth-issuer"
GROUPS = "x-auth-groups"
SCOPES = "x-auth-scopes"
CLIENT_ID = "x-auth-client-id"
DECISION_ID = "x-auth-decision-id"
POLICY_VERSION = "x-auth-policy-version"
RULE = "x-auth-rule"
DEVICE_ID = "x-auth-device-id"  # evidence: the device the request comes from
COUNTRY = "x-auth-country"  # evidence: ISO 3166-1 country of the request
WORKLOAD = "x-auth-workload"  # evidence: the calling workload's SPIFFE ID
ASSERTION = ASSERTION_HEADER  # the signed identity assertion (app/assertion/), when enabled

# Every identity header ztauthz owns. Each allow response sets it or asks Envoy to remove it.
IDENTITY_HEADERS: tuple[str, ...] = (
    SUBJECT,
    ISSUER,
    GROUPS,
    SCOPES,
    CLIENT_ID,
    DECISION_ID,
    POLICY_VERSION,
    RULE,
    DEVICE_ID,
    COUNTRY,
    WORKLOAD,
    ASSERTION,
)
HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"

# Printable ASCII except '%' (the escape) and ',' (the list separator) passes unchanged.
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%,")


@lru_cache(maxsize=4096)  # subjects, groups, scopes and rule ids repeat from check to check
def header_value(value: str, separator: str = ",") -> str:
    """Percent-encode anything that is not printable ASCII, '%', and the list ``separator``.

    Claim values come from the token issuer, not from us: this keeps CR/LF and other bytes out
    of the upstream request and keeps comma-joined lists unambiguous. Total: any ``str`` has a
    value (a lone surrogate, which the token parser refuses anyway, is encoded as its UTF-8
    bytes, ``surrogatepass``), so rendering an allow can never fail after it was decided.
    """
    safe = _SAFE if separator == "," else _SAFE.replace(separator, "")
    return quote(value, safe=safe, encoding="utf-8", errors="surrogatepass")


@dataclass(slots=True, eq=False)
class AllowTemplate:
    """What every allow of one verified principal on one rule and policy version answers (no
    evidence, no assertion): its headers but the decision id (in ``render``'s order), the
    identity headers to remove, and each transport's encoding of them, by transport name
    (``wire``: filled and read by the transports only)."""

    principal: Principal
    headers: dict[str, str]
    headers_to_remove: tuple[str, ...]
    wire: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rendered:
    """One answer, transport-neutral. ``headers`` go to the upstream on allow (status 200) and
    to the client on deny; ``headers_to_remove`` are dropped from the upstream request.
    ``template``: an allow's headers other than ``DECISION_ID`` and its headers to remove are
    exactly the template's (a transport may write its kept encoding of them)."""

    status: int
    headers: dict[str, str]
    body: bytes
    headers_to_remove: tuple[str, ...] = ()
    template: AllowTemplate | None = field(default=None, compare=False)


def _json(decision: Decision, settings: Response) -> bytes:
    body: dict[str, str] = {
        "decision": "allow" if decision.allow else "deny",
        "reason": decision.reason.value,
        "decision_id": decision.decision_id,
    }
    if settings.include_rule and decision.rule_id is not None:
        body["rule"] = decision.rule_id
    return orjson.dumps(body)  # compact, as json.dumps with (",", ":"); every value is ASCII


def _challenge(decision: Decision, settings: Response) -> str:
    dpop_error = CHALLENGE_ERRORS.get(decision.reason)
    if dpop_error is not None:
        return _dpop_challenge(decision, settings, dpop_error)
    realm = f'Bearer realm="{settings.realm}"'
    if decision.reason is Reason.TOKEN_MISSING:
        # RFC 6750 section 3.1: no error code when the request carried no credentials.
        return realm
    if decision.reason is Reason.INSUFFICIENT_USER_AUTHENTICATION:
        return _step_up_challenge(decision, realm)
    return f'{realm}, error="invalid_token", error_description="{describe(decision.reason)}"'


def _step_up_challenge(decision: Decision, realm: str) -> str:
    """RFC 9470 section 3: what the client must obtain, as ``acr_values`` and ``max_age``."""
    parts = [
        realm,
        'error="insufficient_user_authentication"',
        f'error_description="{describe(decision.reason)}"',
    ]
    step_up = decision.step_up
    if step_up is not None:
        # The loader admits only visible ASCII without quote or backslash in acr values.
        acr_values = [v for v in step_up.acr_values if ACR_VALUE.fullmatch(v)]
        if acr_values:
            parts.append(f'acr_values="{" ".join(acr_values)}"')
        if step_up.max_age is not None:
            parts.append(f"max_age={int(step_up.max_age)}")
    return ", ".join(parts)


def _dpop_challenge(decision: Decision, settings: Response, error: str) -> str:
    """RFC 9449 §7.1: the DPoP scheme's challenge, with the error code (invalid_dpop_proof,
    use_dpop_nonce, invalid_token) and the proof algorithms accepted (``algs``)."""
    parts = [
        f'DPoP realm="{settings.realm}"',
        f'error="{error}"',
        f'error_description="{describe(decision.reason)}"',
    ]
    if decision.dpop is not None and decision.dpop.algs:
        parts.append(f'algs="{" ".join(decision.dpop.algs)}"')
    return ", ".join(parts)


_REMOVED: dict[tuple[str, ...], bytes] = {}


def removed_value(names: tuple[str, ...]) -> bytes:
    """``x-envoy-auth-headers-to-remove``'s value: the names, comma-joined (a handful of
    distinct tuples: cached)."""
    joined = _REMOVED.get(names)
    if joined is None:
        joined = ",".join(names).encode("latin-1")
        if len(_REMOVED) < 64:
            _REMOVED[names] = joined
    return joined


_MAX_TEMPLATES = 4096
# (id(principal), rule, policy version) -> the template, or the principal alone once seen once.
# Only the event loop renders: no lock. Bounded: cleared when full (a new token per request
# keeps it busy, never large). The principal is kept and compared by identity, so an id reused
# by a new object never finds another principal's template.
_templates: dict[tuple[int, str | None, str], AllowTemplate | Principal] = {}


# The methods a policy can name, for a 405's Allow header.
_ALLOW = ", ".join(METHOD_ORDER)


def render(decision: Decision, settings: Response) -> Rendered:
    if decision.allow:
        principal = decision.principal
        if principal is None or decision.evidence is not None or decision.assertion is not None:
            return _render_allow(decision)
        key = (id(principal), decision.rule_id, decision.policy_version)
        known = _templates.get(key)
        if isinstance(known, AllowTemplate) and known.principal is principal:
            headers = {DECISION_ID: decision.decision_id}
            headers.update(known.headers)
            return Rendered(200, headers, b"", known.headers_to_remove, known)
        rendered = _render_allow(decision)
        if known is principal:  # the second sight: most tokens are seen once, or often
            fixed = {k: v for k, v in rendered.headers.items() if k != DECISION_ID}
            known = AllowTemplate(principal, fixed, rendered.headers_to_remove)
            _templates[key] = known
            return Rendered(200, rendered.headers, b"", rendered.headers_to_remove, known)
        if len(_templates) >= _MAX_TEMPLATES:
            _templates.clear()
        _templates[key] = principal
        return rendered
    headers = {
        "content-type": "application/json",
        "cache-control": "no-store",
        DECISION_ID: decision.decision_id,
    }
    if decision.status == 401:
        headers["www-authenticate"] = _challenge(decision, settings)
        if decision.dpop is not None and decision.dpop.nonce is not None:
            headers[DPOP_NONCE] = decision.dpop.nonce  # RFC 9449 §9
    elif decision.status == 405:
        headers["allow"] = _ALLOW  # RFC 9110 §15.5.6: a 405 lists the methods allowed
    return Rendered(decision.status, headers, _json(decision, settings))


def _render_allow(decision: Decision) -> Rendered:
    headers: dict[str, str] = {
        DECISION_ID: decision.decision_id,
        POLICY_VERSION: decision.policy_version,
    }
    if decision.rule_id is not None:
        headers[RULE] = header_value(decision.rule_id)
    principal = decision.principal
    if principal is not None:
        headers[SUBJECT] = header_value(principal.subject)
        headers[ISSUER] = header_value(principal.issuer)
        if principal.groups:
            headers[GROUPS] = ",".join(header_value(g) for g in sorted(principal.groups))
        if principal.scopes:
            headers[SCOPES] = " ".join(header_value(s, " ") for s in sorted(principal.scopes))
        if principal.client_id:
            headers[CLIENT_ID] = header_value(principal.client_id)
    evidence = decision.evidence
    if evidence is not None:
        if evidence.device is not None:
            headers[DEVICE_ID] = header_value(evidence.device.id)
        if evidence.location.country is not None:
            headers[COUNTRY] = evidence.location.country  # two upper-case letters
        if evidence.workload is not None:
            headers[WORKLOAD] = header_value(evidence.workload.id)
    assertion = decision.assertion
    if assertion is not None:
        # A JWS compact serialization: base64url and dots, nothing to escape.
        headers[assertion.header] = assertion.token
    missing = tuple(name for name in IDENTITY_HEADERS if name not in headers)
    return Rendered(200, headers, b"", missing)
