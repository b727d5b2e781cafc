"""The closed set of reason codes.

Every decision carries exactly one primary reason. Codes are stable snake_case strings: they
appear in responses, decision logs, spans and metric labels, so they never change meaning and
are never built from request data. The HTTP status belongs to the reason, which keeps
"unauthenticated" (401) apart from "unauthorized" (403).
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # allow
    ALLOWED = "allowed"
    ALLOWED_ANONYMOUS = "allowed_anonymous"
    # 401: no usable identity (RFC 6750 challenge)
    TOKEN_MISSING = "token_missing"
    TOKEN_MALFORMED = "token_malformed"
    TOKEN_TOO_LARGE = "token_too_large"
    TOKEN_TYPE_INVALID = "token_type_invalid"
    TOKEN_ALGORITHM_NOT_ALLOWED = "token_algorithm_not_allowed"
    TOKEN_ISSUER_UNKNOWN = "token_issuer_unknown"
    TOKEN_KEY_UNKNOWN = "token_key_unknown"
    TOKEN_SIGNATURE_INVALID = "token_signature_invalid"
    TOKEN_CLAIMS_MISSING = "token_claims_missing"
    TOKEN_CLAIMS_INVALID = "token_claims_invalid"
    TOKEN_AUDIENCE_INVALID = "token_audience_invalid"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    TOKEN_LIFETIME_EXCEEDED = "token_lifetime_exceeded"
    # 401 with an RFC 9470 step-up challenge: the identity is fine, its authentication too weak
    INSUFFICIENT_USER_AUTHENTICATION = "insufficient_user_authentication"
    # 403: identity known (or explicitly not needed) but not permitted
    NO_MATCHING_RULE = "no_matching_rule"
    DENIED_BY_RULE = "denied_by_rule"
    GRANT_REQUIRED = "grant_required"
    GRANT_INACTIVE = "grant_inactive"
    OUTSIDE_TIME_WINDOW = "outside_time_window"
    CONDITION_NOT_MET = "condition_not_met"
    CONDITION_ERROR = "condition_error"
    # 403: evidence (device posture, location, workload identity) a rule requires is missing or
    # does not hold
    DEVICE_MISSING = "device_missing"
    DEVICE_INVALID = "device_invalid"
    DEVICE_UNBOUND = "device_unbound"
    DEVICE_STALE = "device_stale"
    DEVICE_NONCOMPLIANT = "device_noncompliant"
    CLIENT_IP_UNKNOWN = "client_ip_unknown"
    COUNTRY_UNKNOWN = "country_unknown"
    LOCATION_DENIED = "location_denied"
    LOCATION_MISMATCH = "location_mismatch"
    NETWORK_DENIED = "network_denied"
    WORKLOAD_MISSING = "workload_missing"
    WORKLOAD_DENIED = "workload_denied"
    # 400: the request cannot be matched safely
    PATH_REJECTED = "path_rejected"  # invalid: malformed, encoded separators, dot segments
    PATH_AMBIGUOUS = "path_ambiguous"  # some common upstream would read another path
    # 503: ztauthz cannot decide; it fails closed
    KEYS_UNAVAILABLE = "keys_unavailable"
    INTERNAL_ERROR = "internal_error"


_STATUS: dict[Reason, int] = {
    Reason.ALLOWED: 200,
    Reason.ALLOWED_ANONYMOUS: 200,
    Reason.NO_MATCHING_RULE: 403,
    Reason.DENIED_BY_RULE: 403,
    Reason.INSUFFICIENT_USER_AUTHENTICATION: 401,
    Reason.GRANT_REQUIRED: 403,
    Reason.GRANT_INACTIVE: 403,
    Reason.OUTSIDE_TIME_WINDOW: 403,
    Reason.CONDITION_NOT_MET: 403,
    Reason.CONDITION_ERROR: 403,
    Reason.DEVICE_MISSING: 403,
    Reason.DEVICE_INVALID: 403,
    Reason.DEVICE_UNBOUND: 403,
    Reason.DEVICE_STALE: 403,
    Reason.DEVICE_NONCOMPLIANT: 403,
    Reason.CLIENT_IP_UNKNOWN: 403,
    Reason.COUNTRY_UNKNOWN: 403,
    Reason.LOCATION_DENIED: 403,
    Reason.LOCATION_MISMATCH: 403,
    Reason.NETWORK_DENIED: 403,
    Reason.WORKLOAD_MISSING: 403,
    Reason.WORKLOAD_DENIED: 403,
    Reason.PATH_REJECTED: 400,
    Reason.PATH_AMBIGUOUS: 400,
    Reason.KEYS_UNAVAILABLE: 503,
    Reason.INTERNAL_ERROR: 503,
}

# Short, fixed, client-facing descriptions. They never contain request data or internals.
_DESCRIPTION: dict[Reason, str] = {
    Reason.TOKEN_MISSING: "a bearer token is required",
    Reason.TOKEN_MALFORMED: "the token is malformed",
    Reason.TOKEN_TOO_LARGE: "the token is too large",
    Reason.TOKEN_TYPE_INVALID: "the token type is not accepted",
    Reason.TOKEN_ALGORITHM_NOT_ALLOWED: "the token algorithm is not allowed",
    Reason.TOKEN_ISSUER_UNKNOWN: "the token issuer is not trusted",
    Reason.TOKEN_KEY_UNKNOWN: "the token signing key is unknown",
    Reason.TOKEN_SIGNATURE_INVALID: "the token signature is invalid",
    Reason.TOKEN_CLAIMS_MISSING: "the token lacks required claims",
    Reason.TOKEN_CLAIMS_INVALID: "the token claims are invalid",
    Reason.TOKEN_AUDIENCE_INVALID: "the token is not meant for this audience",
    Reason.TOKEN_EXPIRED: "the token has expired",
    Reason.TOKEN_NOT_YET_VALID: "the token is not yet valid",
    Reason.TOKEN_LIFETIME_EXCEEDED: "the token lifetime exceeds the allowed maximum",
    Reason.NO_MATCHING_RULE: "no policy rule allows this request",
    Reason.DENIED_BY_RULE: "a policy rule denies this request",
    Reason.INSUFFICIENT_USER_AUTHENTICATION: "a stronger or more recent authentication is required",
    Reason.GRANT_REQUIRED: "this request needs an approved access grant",
    Reason.GRANT_INACTIVE: "the access grant is not valid at this time",
    Reason.OUTSIDE_TIME_WINDOW: "this request is not allowed at this time",
    Reason.CONDITION_NOT_MET: "a policy condition does not hold for this request",
    Reason.CONDITION_ERROR: "a policy condition could not be evaluated; the request is denied",
    Reason.DEVICE_MISSING: "this request needs evidence about the device it comes from",
    Reason.DEVICE_INVALID: "the device token is invalid",
    Reason.DEVICE_UNBOUND: "the device token is not bound to the identity token",
    Reason.DEVICE_STALE: "the device evidence is too old",
    Reason.DEVICE_NONCOMPLIANT: "the device does not meet the required posture",
    Reason.CLIENT_IP_UNKNOWN: "the client address cannot be determined",
    Reason.COUNTRY_UNKNOWN: "the country of the request cannot be determined",
    Reason.LOCATION_DENIED: "requests from this location are not allowed",
    Reason.LOCATION_MISMATCH: "the claimed location does not match the network location",
    Reason.NETWORK_DENIED: "requests from this network are not allowed",
    Reason.WORKLOAD_MISSING: "this request needs a workload identity (mTLS client certificate)",
    Reason.WORKLOAD_DENIED: "this workload is not allowed",
    Reason.PATH_REJECTED: "the request path is ambiguous or invalid",
    Reason.PATH_AMBIGUOUS: "the request path could be read as another path by the upstream",
    Reason.KEYS_UNAVAILABLE: "token signing keys are unavailable",
    Reason.INTERNAL_ERROR: "the authorization service failed; the request is denied",
    Reason.ALLOWED: "allowed",
    Reason.ALLOWED_ANONYMOUS: "allowed without identity",
}


def status_of(reason: Reason) -> int:
    """HTTP status for a reason: every token_* reason is 401."""
    return _STATUS.get(reason, 401)


def describe(reason: Reason) -> str:
    return _DESCRIPTION[reason]


def is_unauthenticated(reason: Reason) -> bool:
    return status_of(reason) == 401
