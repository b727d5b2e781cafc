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
    # 401: a sender-constrained token (RFC 9449 DPoP, RFC 8705 certificate-bound) whose binding
    # does not hold. The DPoP proof checks (RFC 9449 §4.3) answer error="invalid_dpop_proof",
    # the nonce check error="use_dpop_nonce" (§9), the binding itself error="invalid_token".
    DPOP_PROOF_MISSING = "dpop_proof_missing"
    DPOP_PROOF_MULTIPLE = "dpop_proof_multiple"
    DPOP_PROOF_MALFORMED = "dpop_proof_malformed"
    DPOP_PROOF_TYPE_INVALID = "dpop_proof_type_invalid"
    DPOP_PROOF_ALGORITHM_NOT_ALLOWED = "dpop_proof_algorithm_not_allowed"
    DPOP_PROOF_KEY_INVALID = "dpop_proof_key_invalid"
    DPOP_PROOF_SIGNATURE_INVALID = "dpop_proof_signature_invalid"
    DPOP_PROOF_METHOD_MISMATCH = "dpop_proof_method_mismatch"
    DPOP_PROOF_URI_MISMATCH = "dpop_proof_uri_mismatch"
    DPOP_PROOF_IAT_INVALID = "dpop_proof_iat_invalid"
    DPOP_PROOF_ATH_MISMATCH = "dpop_proof_ath_mismatch"
    DPOP_PROOF_REPLAYED = "dpop_proof_replayed"
    DPOP_NONCE_REQUIRED = "dpop_nonce_required"
    DPOP_KEY_MISMATCH = "dpop_key_mismatch"
    DPOP_TOKEN_UNBOUND = "dpop_token_unbound"
    TOKEN_BOUND_AS_BEARER = "token_bound_as_bearer"
    TOKEN_BINDING_UNSUPPORTED = "token_binding_unsupported"
    TOKEN_CERTIFICATE_MISMATCH = "token_certificate_mismatch"
    SENDER_CONSTRAINT_REQUIRED = "sender_constraint_required"
    # 401: the token is valid, but a security event or an operator ended what it stands for
    # (continuous access evaluation, app/signals/): the client must authenticate again
    SESSION_REVOKED = "session_revoked"
    ACCOUNT_DISABLED = "account_disabled"
    CREDENTIAL_CHANGED = "credential_changed"
    CREDENTIAL_CHANGE_REQUIRED = "credential_change_required"
    ACCESS_REVOKED = "access_revoked"
    # RFC 7662: the issuer's introspection endpoint says the token is not active (revoked,
    # expired, unknown)
    TOKEN_INACTIVE = "token_inactive"
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
    DEVICE_REVOKED = "device_revoked"
    CLIENT_IP_UNKNOWN = "client_ip_unknown"
    COUNTRY_UNKNOWN = "country_unknown"
    LOCATION_DENIED = "location_denied"
    LOCATION_MISMATCH = "location_mismatch"
    NETWORK_DENIED = "network_denied"
    WORKLOAD_MISSING = "workload_missing"
    WORKLOAD_DENIED = "workload_denied"
    # 403: a high_risk rule needs the issuer to confirm the token now, and it cannot
    INTROSPECTION_REQUIRED = "introspection_required"
    # 400 and 405: the request cannot be matched safely
    METHOD_NOT_ALLOWED = "method_not_allowed"  # a method no policy can name (WebDAV, custom)
    PATH_REJECTED = "path_rejected"  # invalid: malformed, encoded separators, dot segments
    PATH_AMBIGUOUS = "path_ambiguous"  # some common upstream would read another path
    # 503: ztauthz cannot decide; it fails closed
    KEYS_UNAVAILABLE = "keys_unavailable"
    STORE_UNAVAILABLE = "store_unavailable"  # the DPoP replay cache cannot answer
    INTROSPECTION_UNAVAILABLE = "introspection_unavailable"
    INTERNAL_ERROR = "internal_error"


_STATUS: dict[Reason, int] = {
    Reason.ALLOWED: 200,
    Reason.ALLOWED_ANONYMOUS: 200,
    Reason.NO_MATCHING_RULE: 403,
    Reason.DENIED_BY_RULE: 403,
    Reason.INSUFFICIENT_USER_AUTHENTICATION: 401,
    Reason.SESSION_REVOKED: 401,
    Reason.ACCOUNT_DISABLED: 401,
    Reason.CREDENTIAL_CHANGED: 401,
    Reason.CREDENTIAL_CHANGE_REQUIRED: 401,
    Reason.ACCESS_REVOKED: 401,
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
    Reason.DEVICE_REVOKED: 403,
    Reason.CLIENT_IP_UNKNOWN: 403,
    Reason.COUNTRY_UNKNOWN: 403,
    Reason.LOCATION_DENIED: 403,
    Reason.LOCATION_MISMATCH: 403,
    Reason.NETWORK_DENIED: 403,
    Reason.WORKLOAD_MISSING: 403,
    Reason.WORKLOAD_DENIED: 403,
    Reason.INTROSPECTION_REQUIRED: 403,
    Reason.METHOD_NOT_ALLOWED: 405,
    Reason.PATH_REJECTED: 400,
    Reason.PATH_AMBIGUOUS: 400,
    Reason.KEYS_UNAVAILABLE: 503,
    Reason.STORE_UNAVAILABLE: 503,
    Reason.INTROSPECTION_UNAVAILABLE: 503,
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
    Reason.DPOP_PROOF_MISSING: "a DPoP proof is required",
    Reason.DPOP_PROOF_MULTIPLE: "exactly one DPoP proof is allowed",
    Reason.DPOP_PROOF_MALFORMED: "the DPoP proof is malformed",
    Reason.DPOP_PROOF_TYPE_INVALID: "the DPoP proof type is not dpop+jwt",
    Reason.DPOP_PROOF_ALGORITHM_NOT_ALLOWED: "the DPoP proof algorithm is not allowed",
    Reason.DPOP_PROOF_KEY_INVALID: "the DPoP proof key is invalid",
    Reason.DPOP_PROOF_SIGNATURE_INVALID: "the DPoP proof signature is invalid",
    Reason.DPOP_PROOF_METHOD_MISMATCH: "the DPoP proof is for another method",
    Reason.DPOP_PROOF_URI_MISMATCH: "the DPoP proof is for another URI",
    Reason.DPOP_PROOF_IAT_INVALID: "the DPoP proof is too old or from the future",
    Reason.DPOP_PROOF_ATH_MISMATCH: "the DPoP proof is for another access token",
    Reason.DPOP_PROOF_REPLAYED: "the DPoP proof was already used",
    Reason.DPOP_NONCE_REQUIRED: "a DPoP proof with the current server nonce is required",
    Reason.DPOP_KEY_MISMATCH: "the DPoP proof key is not the key the token is bound to",
    Reason.DPOP_TOKEN_UNBOUND: "the token is not bound to a DPoP key",
    Reason.TOKEN_BOUND_AS_BEARER: "the token is sender-constrained and cannot be used as a bearer token",
    Reason.TOKEN_BINDING_UNSUPPORTED: "the token is bound by a confirmation method not supported here",
    Reason.TOKEN_CERTIFICATE_MISMATCH: "the token is bound to another client certificate",
    Reason.SENDER_CONSTRAINT_REQUIRED: "a sender-constrained token is required",
    Reason.STORE_UNAVAILABLE: "the replay cache is unavailable; the request is denied",
    Reason.TOKEN_INACTIVE: "the token is not active",
    Reason.NO_MATCHING_RULE: "no policy rule allows this request",
    Reason.DENIED_BY_RULE: "a policy rule denies this request",
    Reason.INSUFFICIENT_USER_AUTHENTICATION: "a stronger or more recent authentication is required",
    Reason.SESSION_REVOKED: "the session was revoked; sign in again",
    Reason.ACCOUNT_DISABLED: "the account is disabled",
    Reason.CREDENTIAL_CHANGED: "the account's credentials changed; sign in again",
    Reason.CREDENTIAL_CHANGE_REQUIRED: "the account's credentials must be changed; sign in again",
    Reason.ACCESS_REVOKED: "access was revoked; sign in again",
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
    Reason.DEVICE_REVOKED: "access from this device was revoked",
    Reason.CLIENT_IP_UNKNOWN: "the client address cannot be determined",
    Reason.COUNTRY_UNKNOWN: "the country of the request cannot be determined",
    Reason.LOCATION_DENIED: "requests from this location are not allowed",
    Reason.LOCATION_MISMATCH: "the claimed location does not match the network location",
    Reason.NETWORK_DENIED: "requests from this network are not allowed",
    Reason.WORKLOAD_MISSING: "this request needs a workload identity (mTLS client certificate)",
    Reason.WORKLOAD_DENIED: "this workload is not allowed",
    Reason.INTROSPECTION_REQUIRED: "this request needs a token its issuer can confirm as active",
    Reason.METHOD_NOT_ALLOWED: "the request method is not one a policy can allow",
    Reason.PATH_REJECTED: "the request path is ambiguous or invalid",
    Reason.PATH_AMBIGUOUS: "the request path could be read as another path by the upstream",
    Reason.KEYS_UNAVAILABLE: "token signing keys are unavailable",
    Reason.INTROSPECTION_UNAVAILABLE: "the token issuer cannot be asked about the token",
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
