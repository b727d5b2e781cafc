"""The introspection answer parser (RFC 7662 §2.2): properties over untrusted answers.

An introspection answer is untrusted input (whatever the network or a broken server sends):
the parser must only ever return a Principal that passes every check, or raise one of its two
errors, whatever JSON value it is given.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.identity.errors import TokenError
from app.identity.introspection_response import (
    IntrospectionError,
    answer_principal,
    parse_scope,
    read_active,
)
from app.identity.principal import principal_from_claims
from app.reasons import Reason
from tests.unit.identity.identity_support import NOW
from tests.unit.identity.introspection_support import ISSUER, active, introspecting_issuer

ISSUER_SETTINGS = introspecting_issuer()
CLIENT_SUBJECT = introspecting_issuer(subject_from_client_id=True)
TOKEN = "opaque-token"

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Members an answer may carry, with values right or wrong in every way.
member_values = {
    "active": st.booleans() | json_values,
    "iss": st.sampled_from([ISSUER, ISSUER + "/", "https://other.example"]) | json_values,
    "aud": st.sampled_from(["api", ["api", "x"], ["x"], []]) | json_values,
    "sub": st.sampled_from(["user-1", ""]) | json_values,
    "exp": st.sampled_from([int(NOW) + 60, int(NOW) - 60, float("nan")]) | json_values,
    "iat": st.sampled_from([int(NOW), int(NOW) + 3600]) | json_values,
    "nbf": st.sampled_from([int(NOW) - 1, int(NOW) + 3600]) | json_values,
    "scope": st.text(alphabet=' \ta-z"\\~!', max_size=12) | json_values,
    "token_type": st.sampled_from(["Bearer", "bearer", "DPoP", "N_A"]) | json_values,
    "client_id": st.sampled_from(["app", ""]) | json_values,
    "jti": st.sampled_from([TOKEN, "id-1"]) | json_values,
}
answers = st.fixed_dictionaries({}, optional=member_values)
scope_tokens = st.text(
    alphabet=st.characters(exclude_characters='"\\', min_codepoint=0x21, max_codepoint=0x7E),
    min_size=1,
    max_size=10,
)


@settings(max_examples=400)
@given(document=json_values | answers)
def test_any_answer_gives_a_checked_principal_or_a_known_error(document: Any) -> None:
    for issuer in (ISSUER_SETTINGS, CLIENT_SUBJECT):
        try:
            principal = answer_principal(document, TOKEN, issuer, NOW)
        except (IntrospectionError, TokenError):
            continue
        # Only an answer that says active, for our issuer and audience, unexpired, gets here.
        assert document["active"] is True
        assert principal.issuer == ISSUER and "api" in principal.audience
        assert principal.expires_at + 30 > NOW and principal.subject
        assert principal.token_id != TOKEN and "active" not in principal.claims


@given(document=json_values)
def test_read_active_accepts_only_a_json_boolean(document: Any) -> None:
    try:
        value = read_active(document)
    except IntrospectionError:
        assert not (isinstance(document, dict) and isinstance(document.get("active"), bool))
    else:
        assert value is document["active"]


@given(tokens=st.lists(scope_tokens, max_size=6))
def test_scope_tokens_joined_by_single_spaces_are_read_back(tokens: list[str]) -> None:
    assert parse_scope(" ".join(tokens)) == frozenset(tokens)


@given(tokens=st.lists(scope_tokens, min_size=1, max_size=4), where=st.integers(0, 8))
@pytest.mark.parametrize("bad", ["  ", "\t", "\n", " \u00a0", "\x7f", '"', "\\"])
def test_a_scope_outside_rfc_6749_grammar_is_refused(
    bad: str, tokens: list[str], where: int
) -> None:
    text = " ".join(tokens)
    cut = min(where, len(text))
    for broken in (text[:cut] + bad + text[cut:], " " + text, text + " "):
        with pytest.raises(TokenError) as refused:
            parse_scope(broken)
        assert refused.value.reason is Reason.TOKEN_CLAIMS_INVALID


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"active": False, "sub": "user-1"}, Reason.TOKEN_INACTIVE),
        (active(iss=None), Reason.TOKEN_CLAIMS_MISSING),
        (active(iss="https://other.example"), Reason.TOKEN_ISSUER_UNKNOWN),
        (active(aud=None), Reason.TOKEN_AUDIENCE_INVALID),
        (active(aud=["a", "b"]), Reason.TOKEN_AUDIENCE_INVALID),
        (active(exp=None), Reason.TOKEN_CLAIMS_MISSING),
        (active(exp=int(NOW) - 31), Reason.TOKEN_EXPIRED),
        (active(iat=int(NOW) + 31), Reason.TOKEN_NOT_YET_VALID),
        (active(nbf=int(NOW) + 31), Reason.TOKEN_NOT_YET_VALID),
        (active(exp=int(NOW) + 3600), Reason.TOKEN_LIFETIME_EXCEEDED),
        (active(token_type="DPoP"), Reason.TOKEN_TYPE_INVALID),
        (active(token_type=1), Reason.TOKEN_CLAIMS_INVALID),
        (active(scope=["read"]), Reason.TOKEN_CLAIMS_INVALID),
        (active(scope="read\twrite"), Reason.TOKEN_CLAIMS_INVALID),
        (active(sub=None), Reason.TOKEN_CLAIMS_MISSING),
        (active(sub=7), Reason.TOKEN_CLAIMS_INVALID),
        (active(client_id=7), Reason.TOKEN_CLAIMS_INVALID),
    ],
)
def test_refusals_name_the_reason_a_jwt_would_get(document: dict[str, Any], reason: Reason) -> None:
    with pytest.raises(TokenError) as refused:
        answer_principal(document, TOKEN, ISSUER_SETTINGS, NOW)
    assert refused.value.reason is reason


@pytest.mark.parametrize(
    "document", [None, [], "active", {"active": "true"}, {"active": 1}, {"sub": "x"}]
)
def test_an_answer_that_is_not_rfc_7662s_is_no_answer(document: Any) -> None:
    with pytest.raises(IntrospectionError):
        answer_principal(document, TOKEN, ISSUER_SETTINGS, NOW)


def test_the_principal_is_the_one_the_same_claims_in_a_jwt_give() -> None:
    document = active(groups=["g1", "g2"], acr="urn:mfa", amr=["pwd", "otp"], auth_time=int(NOW))
    from_answer = answer_principal(document, TOKEN, ISSUER_SETTINGS, NOW)
    jwt_claims = {k: v for k, v in document.items() if k not in ("active", "token_type")}
    from_jwt = principal_from_claims(jwt_claims, ISSUER, "groups", "scope")
    assert from_answer == from_jwt


def test_the_client_is_the_subject_only_when_configured() -> None:
    document = active(sub=None, client_id="machine-1")
    with pytest.raises(TokenError):
        answer_principal(document, TOKEN, ISSUER_SETTINGS, NOW)
    principal = answer_principal(document, TOKEN, CLIENT_SUBJECT, NOW)
    assert principal.subject == principal.client_id == "machine-1"
    # A present sub always wins over the client.
    assert answer_principal(active(), TOKEN, CLIENT_SUBJECT, NOW).subject == "user-1"
