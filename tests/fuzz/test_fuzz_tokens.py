"""The token path under hostile input: the JWS reader's JSON, the compact parser and the whole
verifier (with real keys), and the Authorization header and cookie extraction.

Invariants: nothing but TokenError (or ValueError, inside the JSON reader) ever escapes; what
is accepted is I-JSON read exactly as Python reads it; a token is accepted only when it was
signed as it is (a changed token never verifies into another principal); scopes are RFC 6749
scope-tokens.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import Any

import jwt
import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from app.identity.errors import TokenError
from app.identity.extract import extract_credential
from app.identity.jws import MAX_DEPTH, _loads, parse_compact
from app.identity.principal import Principal
from app.identity.verify import TokenVerifier
from app.reasons import Reason
from tests.unit.identity.identity_support import make_issuer, public_jwk, rsa_key

ISSUER = "https://issuer.example.com"
NOW = 1_700_000_000.0
KEY = rsa_key("fuzz")
KID = "fuzz-1"
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class StaticKeys:
    """One RS256 key, always there: the verifier's KeySource without any HTTP."""

    def __init__(self) -> None:
        self._key = jwt.PyJWK(public_jwk(KEY, KID, alg="RS256"))

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def is_ready(self, now: float) -> bool:
        return True

    async def get_key(self, kid: str | None, alg: str, now: float) -> jwt.PyJWK:
        if kid != KID:
            raise TokenError(Reason.TOKEN_KEY_UNKNOWN, "no such key")
        return self._key


VERIFIER = TokenVerifier(
    [make_issuer(ISSUER, algorithms=["RS256"])], {ISSUER: StaticKeys()}, max_token_bytes=16_384
)


def verify(token: str) -> Principal | Reason:
    try:
        return asyncio.run(VERIFIER.verify(token, NOW))
    except TokenError as exc:
        return exc.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed(header: bytes, payload: bytes) -> str:
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = jwt.get_algorithm_by_name("RS256").sign(signing_input.encode(), KEY)
    return f"{signing_input}.{b64(signature)}"


def claims(**extra: Any) -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "sub": "alice",
        "aud": "api",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        **extra,
    }


HEADER = json.dumps({"alg": "RS256", "kid": KID, "typ": "JWT"}).encode()
GOOD = signed(HEADER, json.dumps(claims(scope="openid invoices:read")).encode())
GOOD_PRINCIPAL = verify(GOOD)

# JSON values as issuers (and attackers) write them.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


# --- the JSON reader ----------------------------------------------------------------------


@given(json_values, st.booleans())
def test_i_json_reads_exactly_as_written(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    if depth(value) > MAX_DEPTH:
        return
    read = _loads(raw)
    assert read == json.loads(raw)
    assert type(read) is type(value)


@given(st.binary(max_size=200))
@example(b"\xef\xbb\xbf{}")
@example(b'{"a":"\\ud800"}')
@example(b'{"a":1,"a":1}')
@example(b'{"a":NaN}')
def test_any_bytes_are_read_or_refused_with_valueerror(raw: bytes) -> None:
    try:
        value = _loads(raw)
    except ValueError:
        return
    # Accepted: strict JSON, read as Python reads it, writable by orjson, no duplicate name.
    assert value == json.loads(raw.decode("utf-8"))
    orjson.dumps(value)

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({k for k, _ in pairs}) == len(pairs)
        return dict(pairs)

    json.loads(raw, object_pairs_hook=unique)


@given(st.integers(min_value=0, max_value=3000), st.sampled_from("[{"))
def test_nesting_is_bounded_at_any_depth(levels: int, opener: str) -> None:
    if opener == "[":
        inner = b"[" * levels + b"1" + b"]" * levels
    else:
        inner = b'{"a":' * levels + b"1" + b"}" * levels
    raw = b'{"x":' + inner + b"}"
    try:
        _loads(raw)
    except ValueError:
        assert levels + 1 > MAX_DEPTH
    else:
        assert levels + 1 <= MAX_DEPTH


@given(st.text(max_size=300))
@example("a.b.c")
@example("e30.e30.")
def test_any_text_is_a_compact_jws_or_malformed(token: str) -> None:
    try:
        parse_compact(token)
    except TokenError as exc:
        assert exc.reason is Reason.TOKEN_MALFORMED


# --- the verifier -------------------------------------------------------------------------


@given(st.text(max_size=200))
def test_any_text_is_refused_with_a_token_reason(token: str) -> None:
    outcome = verify(token)
    assert isinstance(outcome, Reason) and outcome.value.startswith("token_")


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
@example({"scope": "openid\tinvoices:read"})
@example({"scope": "openid\u00a0invoices:read"})
@example({"sub": ["alice"]})
@example({"exp": 10**30})
@example({"aud": ["api", 7]})
@example({"groups": "finance"})
def test_signed_claims_become_a_principal_or_a_token_reason(extra: dict[str, Any]) -> None:
    payload = claims(**extra)
    outcome = verify(signed(HEADER, json.dumps(payload).encode()))
    if isinstance(outcome, Reason):
        assert outcome.value.startswith("token_") or outcome is Reason.KEYS_UNAVAILABLE
        return
    assert outcome.subject == payload["sub"]
    assert all(_SCOPE_TOKEN.fullmatch(scope) for scope in outcome.scopes)
    scope = payload.get("scope")
    if isinstance(scope, str):
        assert outcome.scopes == frozenset(scope.split(" ")) - {""}


@given(json_values, json_values)
def test_any_signed_header_and_payload_json_is_decided(header: Any, payload: Any) -> None:
    if isinstance(header, dict):
        header = {**header, "alg": "RS256", "kid": KID}
    outcome = verify(signed(json.dumps(header).encode(), json.dumps(payload).encode()))
    assert isinstance(outcome, Reason | Principal)


@given(st.data())
def test_a_changed_token_never_verifies_as_another(data: st.DataObject) -> None:
    """Edit the signed token anywhere: it is refused, or it still says exactly what was
    signed (a base64url character whose dropped low bits change nothing)."""
    token = GOOD
    position = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.text(alphabet="ABCabc012-_.=+/ \t", min_size=0, max_size=3))
    changed = token[:position] + replacement + token[position + 1 :]
    outcome = verify(changed)
    if isinstance(outcome, Principal):
        assert outcome == GOOD_PRINCIPAL


@given(st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"]))
def test_json_not_in_plain_utf8_is_malformed(encoding: str) -> None:
    payload = json.dumps(claims()).encode(encoding)
    assert verify(signed(HEADER, payload)) is Reason.TOKEN_MALFORMED


# --- Authorization header and cookie ------------------------------------------------------

header_text = st.lists(
    st.sampled_from(
        [
            *("Bearer ", "bearer", "BEARER", "DPoP ", " ", "\t", "=", ";", ",", '"', "a", "Z", "0"),
            ".",
            *("-", "_", "~", "+", "/", "\u00e9", "\x00", "\r", "\n", "\u00a0", "token", "session"),
        ]
    ),
    max_size=20,
).map("".join)


@given(
    st.one_of(st.none(), header_text, st.text(max_size=60)),
    st.one_of(st.none(), header_text, st.text(max_size=60)),
    st.sampled_from([None, "session", "token"]),
)
@example("Bearer  abc", None, None)
@example(None, "token=a; token=b", "token")
@example(None, 'token="abc"', "token")
@example("Basic abc", "token=abc", "token")
def test_extract_credential_finds_a_b64token_or_refuses(
    authorization: str | None, cookie: str | None, cookie_name: str | None
) -> None:
    headers = {
        k: v for k, v in (("authorization", authorization), ("cookie", cookie)) if v is not None
    }
    try:
        credential = extract_credential(headers, cookie_name)
    except TokenError as exc:
        assert exc.reason is Reason.TOKEN_MALFORMED
        assert authorization is not None or (cookie is not None and cookie_name is not None)
        return
    if credential is None:
        assert authorization is None
        return
    assert _B64TOKEN.fullmatch(credential.token)
    source = authorization if authorization is not None else cookie
    assert source is not None and credential.token in source
    assert (credential.scheme == "cookie") == (authorization is None)
