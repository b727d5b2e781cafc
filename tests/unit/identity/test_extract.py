from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.identity.errors import TokenError
from app.identity.extract import Credential, extract_credential
from app.reasons import Reason

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln-_"


@pytest.mark.parametrize(
    ("headers", "cookie_name", "expected"),
    [
        ({"authorization": f"Bearer {JWT}"}, None, JWT),
        ({"authorization": f"bearer {JWT}"}, None, JWT),
        ({"authorization": f"BEARER {JWT}"}, None, JWT),
        ({"authorization": f"Bearer   {JWT}"}, None, JWT),  # 1*SP
        ({"authorization": f"  Bearer {JWT}\t"}, None, JWT),  # surrounding OWS
        ({"authorization": "Bearer abc+/~=="}, None, "abc+/~=="),  # full b64token charset
        ({}, None, None),
        ({}, "session", None),
        ({"cookie": f"session={JWT}"}, None, None),  # cookie not configured
        ({"cookie": f"a=1; session={JWT}; b=2"}, "session", JWT),
        ({"cookie": f'session="{JWT}"'}, "session", JWT),
        ({"cookie": f"xsession={JWT}; sessionx=1"}, "session", None),
        ({"cookie": "session="}, "session", None),  # cleared cookie
        ({"cookie": ""}, "session", None),
        # the Authorization header wins over the cookie
        ({"authorization": f"Bearer {JWT}", "cookie": "session=other"}, "session", JWT),
    ],
)
def test_extracts_token(headers: dict[str, str], cookie_name: str | None, expected: str) -> None:
    found = extract_credential(headers, cookie_name)
    assert (None if found is None else found.token) == expected
    if found is not None:
        assert found.scheme == ("bearer" if "authorization" in headers else "cookie")


@pytest.mark.parametrize(
    "value",
    [f"DPoP {JWT}", f"dpop {JWT}", f"DPOP   {JWT}", f" DPoP {JWT}\t"],
)
def test_a_dpop_credential_names_its_scheme(value: str) -> None:
    # RFC 9449 §7.1: "DPoP" 1*SP token68; the scheme is case-insensitive (RFC 9110 §11.1).
    assert extract_credential({"authorization": value}, None) == Credential("dpop", JWT)


@pytest.mark.parametrize(
    ("headers", "cookie_name"),
    [
        ({"authorization": ""}, None),
        ({"authorization": "Bearer"}, None),
        ({"authorization": "Bearer "}, None),
        ({"authorization": f"Basic {JWT}"}, None),
        ({"authorization": f"Bearer {JWT} {JWT}"}, None),  # two tokens
        ({"authorization": f"Bearer {JWT}, Bearer {JWT}"}, None),  # merged duplicate headers
        ({"authorization": f"Bearer\t{JWT}"}, None),  # RFC 6750: SP only
        ({"authorization": f"Bearer {JWT}=x"}, None),  # '=' only as trailing padding
        ({"authorization": "Bearer a\u00e9b"}, None),  # non-ASCII
        ({"authorization": "Bearer a;b"}, None),
        ({"authorization": f"Bearer{JWT}"}, None),
        ({"authorization": f"DPoP {JWT}, DPoP {JWT}"}, None),  # merged duplicate headers
        ({"authorization": f"DPoP {JWT} {JWT}"}, None),
        ({"authorization": f"DPoP{JWT}"}, None),
        ({"authorization": "DPoP "}, None),
        # a present Authorization header is never skipped in favour of the cookie
        ({"authorization": "Basic dXNlcjpwYXNz", "cookie": f"session={JWT}"}, "session"),
        ({"cookie": f"session={JWT}; session={JWT}"}, "session"),  # cookie tossing
        ({"cookie": "session=not a token"}, "session"),
        ({"cookie": "session=a,b"}, "session"),
    ],
)
def test_refuses_malformed_credentials(headers: dict[str, str], cookie_name: str | None) -> None:
    with pytest.raises(TokenError) as caught:
        extract_credential(headers, cookie_name)
    assert caught.value.reason is Reason.TOKEN_MALFORMED


def test_error_message_never_contains_the_credential() -> None:
    with pytest.raises(TokenError) as caught:
        extract_credential({"authorization": "Basic c2VjcmV0LXBhc3N3b3Jk"}, None)
    assert "c2VjcmV0" not in str(caught.value)


# -- the expressions are the definition; the scan that runs per check gives their answers ---

_CHARS = st.sampled_from(list("Bearer DPoPdpop BEARER=+/-._~\t\u212a\u0130aZ09,;é"))


@given(st.text(_CHARS, max_size=30) | st.text(max_size=30))
def test_is_b64token_answers_as_the_expression(text: str) -> None:
    from app.identity.extract import _TOKEN, is_b64token

    assert is_b64token(text) == (_TOKEN.fullmatch(text) is not None)


@given(st.text(_CHARS, max_size=30) | st.text(max_size=30))
def test_the_authorization_header_is_read_as_the_expressions_read_it(value: str) -> None:
    from app.identity.extract import _BEARER, _DPOP, _OWS, _from_authorization

    stripped = value.strip(_OWS)
    bearer, dpop = _BEARER.fullmatch(stripped), _DPOP.fullmatch(stripped)
    if bearer is None and dpop is None:
        with pytest.raises(TokenError):
            _from_authorization(value)
        return
    credential = _from_authorization(value)
    expected = ("bearer", bearer.group(1)) if bearer else ("dpop", dpop.group(1))  # type: ignore[union-attr]
    assert (credential.scheme, credential.token) == expected
