from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from app.identity.claims import claim_at, read_groups, read_scopes, validate_claims
from app.identity.errors import TokenError
from app.reasons import Reason
from app.settings import ClaimNames, Issuer

ISS = "https://idp.example.com"
NOW = 1_700_000_000
LEEWAY = 30
MAX_LIFETIME = 900
ISSUER = Issuer(
    issuer=ISS,
    audiences=["api", "other-api"],
    leeway=timedelta(seconds=LEEWAY),
    max_token_lifetime=timedelta(seconds=MAX_LIFETIME),
    claims=ClaimNames(groups="realm_access.roles", scopes="scp"),
)
ABSENT = object()


def payload(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": "alice",
        "aud": "api",
        "iat": NOW - 10,
        "exp": NOW + 290,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ABSENT}


CASES: list[tuple[str, dict[str, Any], Reason | None]] = [
    ("valid", payload(), None),
    # iss
    ("iss other", payload(iss="https://evil.example.com"), Reason.TOKEN_ISSUER_UNKNOWN),
    ("iss trailing slash", payload(iss=ISS + "/"), Reason.TOKEN_ISSUER_UNKNOWN),
    ("iss missing", payload(iss=ABSENT), Reason.TOKEN_CLAIMS_MISSING),
    ("iss not string", payload(iss=["x"]), Reason.TOKEN_CLAIMS_INVALID),
    # aud
    ("aud list with ours", payload(aud=["x", "other-api"]), None),
    ("aud other", payload(aud="someone-else"), Reason.TOKEN_AUDIENCE_INVALID),
    ("aud list without ours", payload(aud=["a", "b"]), Reason.TOKEN_AUDIENCE_INVALID),
    ("aud empty list", payload(aud=[]), Reason.TOKEN_AUDIENCE_INVALID),
    ("aud missing", payload(aud=ABSENT), Reason.TOKEN_AUDIENCE_INVALID),
    ("aud case differs", payload(aud="API"), Reason.TOKEN_AUDIENCE_INVALID),
    ("aud number", payload(aud=1), Reason.TOKEN_CLAIMS_INVALID),
    ("aud list of non-strings", payload(aud=["api", 1]), Reason.TOKEN_CLAIMS_INVALID),
    # exp: expired when exp + leeway <= now
    ("exp missing", payload(exp=ABSENT), Reason.TOKEN_CLAIMS_MISSING),
    ("exp string", payload(exp=str(NOW + 60)), Reason.TOKEN_CLAIMS_INVALID),
    ("exp bool", payload(exp=True), Reason.TOKEN_CLAIMS_INVALID),
    ("exp null", payload(exp=None), Reason.TOKEN_CLAIMS_INVALID),
    ("exp NaN", payload(exp=float("nan")), Reason.TOKEN_CLAIMS_INVALID),
    ("exp infinity", payload(exp=float("inf")), Reason.TOKEN_CLAIMS_INVALID),
    ("exp huge int", payload(exp=10**400), Reason.TOKEN_CLAIMS_INVALID),
    ("exp float", payload(exp=NOW + 60.5), None),
    ("exp now - leeway", payload(iat=NOW - 100, exp=NOW - LEEWAY), Reason.TOKEN_EXPIRED),
    ("exp within leeway", payload(iat=NOW - 100, exp=NOW - LEEWAY + 1), None),
    ("exp long ago", payload(iat=NOW - 1000, exp=NOW - 500), Reason.TOKEN_EXPIRED),
    # iat
    ("iat missing", payload(iat=ABSENT), Reason.TOKEN_CLAIMS_MISSING),
    ("iat string", payload(iat="yesterday"), Reason.TOKEN_CLAIMS_INVALID),
    ("iat at now + leeway", payload(iat=NOW + LEEWAY), None),
    ("iat past leeway", payload(iat=NOW + LEEWAY + 1), Reason.TOKEN_NOT_YET_VALID),
    # nbf (optional)
    ("nbf past", payload(nbf=NOW - 5), None),
    ("nbf at now + leeway", payload(nbf=NOW + LEEWAY), None),
    ("nbf past leeway", payload(nbf=NOW + LEEWAY + 1), Reason.TOKEN_NOT_YET_VALID),
    ("nbf string", payload(nbf="soon"), Reason.TOKEN_CLAIMS_INVALID),
    # lifetime: exp - iat <= max_token_lifetime
    ("lifetime max", payload(iat=NOW - 10, exp=NOW - 10 + MAX_LIFETIME), None),
    (
        "lifetime over",
        payload(iat=NOW - 10, exp=NOW - 9 + MAX_LIFETIME),
        Reason.TOKEN_LIFETIME_EXCEEDED,
    ),
    ("lifetime a year", payload(exp=NOW + 365 * 86400), Reason.TOKEN_LIFETIME_EXCEEDED),
    # sub
    ("sub missing", payload(sub=ABSENT), Reason.TOKEN_CLAIMS_MISSING),
    ("sub empty", payload(sub=""), Reason.TOKEN_CLAIMS_MISSING),
    ("sub number", payload(sub=42), Reason.TOKEN_CLAIMS_INVALID),
    # optional strings
    ("jti string", payload(jti="id-1"), None),
    ("jti number", payload(jti=1), Reason.TOKEN_CLAIMS_INVALID),
    ("client_id number", payload(client_id=1), Reason.TOKEN_CLAIMS_INVALID),
    ("azp list", payload(azp=["a"]), Reason.TOKEN_CLAIMS_INVALID),
    # groups (nested path) and scopes
    ("groups nested list", payload(realm_access={"roles": ["a", "b"]}), None),
    ("groups wrong type", payload(realm_access={"roles": {"a": 1}}), Reason.TOKEN_CLAIMS_INVALID),
    ("groups list of ints", payload(realm_access={"roles": [1]}), Reason.TOKEN_CLAIMS_INVALID),
    ("scopes number", payload(scp=7), Reason.TOKEN_CLAIMS_INVALID),
]


@pytest.mark.parametrize(("claims", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validate_claims(claims: dict[str, Any], expected: Reason | None) -> None:
    if expected is None:
        validate_claims(claims, ISSUER, NOW)
        return
    with pytest.raises(TokenError) as caught:
        validate_claims(claims, ISSUER, NOW)
    assert caught.value.reason is expected


def test_zero_leeway_is_exact() -> None:
    strict = ISSUER.model_copy(update={"leeway": timedelta(0)})
    validate_claims(payload(exp=NOW + 1), strict, NOW)
    with pytest.raises(TokenError) as caught:
        validate_claims(payload(exp=NOW), strict, NOW)
    assert caught.value.reason is Reason.TOKEN_EXPIRED


@pytest.mark.parametrize(
    ("claims", "path", "expected"),
    [
        ({"groups": ["a", "b"]}, "groups", frozenset({"a", "b"})),
        ({"groups": "a"}, "groups", frozenset({"a"})),
        ({}, "groups", frozenset()),
        ({"realm_access": {"roles": ["r"]}}, "realm_access.roles", frozenset({"r"})),
        ({"realm_access": ["r"]}, "realm_access.roles", frozenset()),
        ({"https://example.com/groups": ["ns"]}, "https://example.com/groups", frozenset({"ns"})),
    ],
)
def test_read_groups(claims: dict[str, Any], path: str, expected: frozenset[str]) -> None:
    assert read_groups(claims, path) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("read write", frozenset({"read", "write"})),
        ("  read   write ", frozenset({"read", "write"})),
        ("", frozenset()),
        (["read", "write"], frozenset({"read", "write"})),
    ],
)
def test_read_scopes(value: Any, expected: frozenset[str]) -> None:
    assert read_scopes({"scope": value}, "scope") == expected


@pytest.mark.parametrize(
    "value",
    [
        "openid\tapi:read",  # str.split() made this two scopes, granting api:read
        "openid\u00a0api:read",  # no-break space
        "openid\u2003api:read",  # em space
        "openid\napi:read",
        "openid\x0bapi:read",
        "openid\x1fapi:read",
        'quote"d',
        "back\\slash",
        "caf\u00e9",
        ["openid", "api read"],  # a list item is one scope-token, never two
        ["openid\tapi:read"],
        [""],
    ],
)
def test_scopes_split_on_space_only_and_must_be_scope_tokens(value: Any) -> None:
    """RFC 6749 §3.3: scope-tokens are %x21 / %x23-5B / %x5D-7E, separated by SP alone."""
    with pytest.raises(TokenError) as caught:
        read_scopes({"scope": value}, "scope")
    assert caught.value.reason is Reason.TOKEN_CLAIMS_INVALID


def test_claim_at_prefers_literal_dotted_name() -> None:
    claims = {"a.b": "literal", "a": {"b": "nested"}}
    assert claim_at(claims, "a.b") == "literal"
    assert claim_at({"a": {"b": "nested"}}, "a.b") == "nested"
    assert claim_at({"a": "leaf"}, "a.b") is None
