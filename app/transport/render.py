"""Decision -> (status, headers, body), shared by every transport.

Identity headers for the upstream are always either set by ztauthz or named for removal, so a
client can never smuggle one through Envoy (Envoy only overwrites the headers a response carries;
``x-envoy-auth-headers-to-remove`` makes it drop the others).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

from app.decision import Decision
from app.reasons import Reason, describe
from app.settings import Response

SUBJECT = "x-auth-subject"
ISSUER = "x-auth-issuer"
GROUPS = "x-auth-groups"
SCOPES = "x-auth-scopes"
CLIENT_ID = "x-auth-client-id"
DECISION_ID = "x-auth-decision-id"
POLICY_VERSION = "x-auth-policy-version"
RULE = "x-auth-rule"

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
)
HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"

# Printable ASCII except '%' (the escape) and ',' (the list separator) passes unchanged.
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in "%,")


def header_value(value: str, separator: str = ",") -> str:
    """Percent-encode anything that is not printable ASCII, '%', and the list ``separator``.

    Claim values come from the token issuer, not from us: this keeps CR/LF and other bytes out
    of the upstream request and keeps comma-joined lists unambiguous.
    """
    return quote(value, safe=_SAFE if separator == "," else _SAFE.replace(separator, ""))


@dataclass(frozen=True, slots=True)
class Rendered:
    status: int
    headers: dict[str, str]
    body: bytes


def _json(decision: Decision, settings: Response) -> bytes:
    body: dict[str, str] = {
        "decision": "allow" if decision.allow else "deny",
        "reason": decision.reason.value,
        "decision_id": decision.decision_id,
    }
    if settings.include_rule and decision.rule_id is not None:
        body["rule"] = decision.rule_id
    return json.dumps(body, separators=(",", ":")).encode()


def _challenge(decision: Decision, settings: Response) -> str:
    realm = f'Bearer realm="{settings.realm}"'
    if decision.reason is Reason.TOKEN_MISSING:
        # RFC 6750 section 3.1: no error code when the request carried no credentials.
        return realm
    return f'{realm}, error="invalid_token", error_description="{describe(decision.reason)}"'


def render(decision: Decision, settings: Response) -> Rendered:
    if decision.allow:
        return _render_allow(decision)
    headers = {
        "content-type": "application/json",
        "cache-control": "no-store",
        DECISION_ID: decision.decision_id,
    }
    if decision.status == 401:
        headers["www-authenticate"] = _challenge(decision, settings)
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
    missing = [name for name in IDENTITY_HEADERS if name not in headers]
    if missing:
        headers[HEADERS_TO_REMOVE] = ",".join(missing)
    return Rendered(200, headers, b"")
