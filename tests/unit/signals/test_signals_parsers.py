"""Property tests for the parsers of untrusted signals input: subject identifiers (RFC 9493,
SSF complex subjects), event payloads (CAEP/RISC/SSF), SET claims (RFC 8417 as SSF profiles
them) and stored records. Whatever the input, a parser returns its typed value or raises its
own error: never anything else, never a value that breaks its own invariants."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.settings.signals import Transmitter
from app.signals.errors import SetError, SetErrorCode
from app.signals.events import URIS, EventError, EventType, parse_event
from app.signals.records import Effect, Record, RecordError, decode, encode
from app.signals.set_token import read_claims
from app.signals.subjects import (
    Aliases,
    Complex,
    Email,
    IssSub,
    JwtId,
    Opaque,
    Other,
    SubjectError,
    parse_subject,
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
FORMATS = [
    "account",
    "email",
    "iss_sub",
    "opaque",
    "phone_number",
    "did",
    "uri",
    "aliases",
    "jwt_id",
    "saml_assertion_id",
    "ip-addresses",
    "complex",
    "nonsense",
]
MEMBERS = [
    "uri",
    "email",
    "iss",
    "sub",
    "id",
    "phone_number",
    "url",
    "identifiers",
    "jti",
    "issuer",
    "assertion_id",
    "ip-addresses",
    "user",
    "session",
    "device",
    "tenant",
]


@st.composite
def subject_like(draw: st.DrawFn, depth: int = 2) -> dict[str, Any]:
    """Objects shaped like subjects, valid or nearly so."""
    value: dict[str, Any] = {}
    if draw(st.booleans()):
        value["format"] = draw(st.sampled_from(FORMATS) | json_scalars)
    for name in draw(st.lists(st.sampled_from(MEMBERS), max_size=4, unique=True)):
        if depth and name in ("user", "session", "device", "tenant", "identifiers"):
            inner = draw(subject_like(depth - 1))
            value[name] = [inner] if name == "identifiers" else inner
        else:
            value[name] = draw(st.text(min_size=0, max_size=12) | json_values)
    return value


@given(subject_like() | json_values)
@settings(max_examples=400)
def test_subject_parser_returns_a_subject_or_refuses(value: Any) -> None:
    try:
        parsed = parse_subject(value)
    except SubjectError:
        return
    assert isinstance(parsed, IssSub | Email | Opaque | JwtId | Other | Aliases | Complex)
    if isinstance(parsed, Complex):
        assert any(
            getattr(parsed, n) is not None
            for n in ("user", "session", "device", "application", "tenant", "org_unit", "group")
        )
    if isinstance(parsed, Email):
        assert "@" in parsed.email


@given(st.text(min_size=1, max_size=50), st.text(min_size=1, max_size=50))
def test_well_formed_subjects_parse_exactly(iss: str, sub: str) -> None:
    assert parse_subject({"format": "iss_sub", "iss": iss, "sub": sub}) == IssSub(iss, sub)
    assert parse_subject({"format": "opaque", "id": sub}) == Opaque(sub)
    nested = parse_subject(
        {
            "format": "complex",
            "user": {"format": "iss_sub", "iss": iss, "sub": sub},
            "session": {"format": "opaque", "id": sub},
            "tenant": {"format": "opaque", "id": "t"},
        }
    )
    assert nested == Complex(user=IssSub(iss, sub), session=Opaque(sub), tenant=Opaque("t"))


@pytest.mark.parametrize(
    "value",
    [
        {"format": "aliases", "identifiers": [{"format": "aliases", "identifiers": []}]},
        {"format": "iss_sub", "iss": "x"},
        {"format": "email", "email": "no-at-sign"},
        {"format": "opaque", "id": ""},
        {"format": "opaque", "id": "x" * 2000},
        {"format": "complex"},
        {"format": "complex", "tenant": {"format": "unknown"}},
    ],
)
def test_malformed_subjects_are_refused(value: Any) -> None:
    with pytest.raises(SubjectError):
        parse_subject(value)


event_uris = st.sampled_from(sorted(URIS)) | st.text(max_size=30)


@given(
    event_uris,
    st.dictionaries(
        st.sampled_from(
            [
                "event_timestamp",
                "initiating_entity",
                "current_status",
                "previous_status",
                "credential_type",
                "change_type",
                "namespace",
                "current_level",
                "change_direction",
                "claims",
                "state",
                "status",
                "subject",
            ]
        ),
        json_values,
        max_size=6,
    )
    | json_values,
)
@settings(max_examples=400)
def test_event_parser_returns_an_event_or_refuses(uri: str, payload: Any) -> None:
    try:
        event = parse_event(uri, payload)
    except EventError:
        return
    assert event.type is URIS.get(uri, EventType.OTHER)
    assert event.at is None or event.at >= 0
    if event.type is EventType.DEVICE_COMPLIANCE_CHANGE:
        assert isinstance(event.compliant, bool)


def transmitter() -> Transmitter:
    return Transmitter.model_validate(
        {
            "name": "idp",
            "issuer": "https://idp.example.com",
            "audiences": ["urn:rcv"],
            "jwks_uri": "https://idp.example.com/jwks",
            "push": {"token": "x" * 20},
            "leeway": timedelta(seconds=30),
        }
    )


set_claims = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from(["https://idp.example.com", "https://evil.example"]) | json_scalars,
        "aud": st.sampled_from(["urn:rcv", "urn:other"])
        | st.lists(st.sampled_from(["urn:rcv", "x"]))
        | json_scalars,
        "jti": st.text(max_size=300) | json_scalars,
        "iat": st.integers(-10, 2_000_000_000) | json_scalars,
        "sub": json_scalars,
        "exp": json_scalars,
        "txn": json_scalars,
        "sub_id": subject_like(),
        "events": st.dictionaries(
            event_uris, st.dictionaries(st.text(max_size=8), json_values, max_size=3), max_size=3
        )
        | json_values,
    },
)


@given(set_claims)
@settings(max_examples=400)
def test_set_claims_are_read_or_refused_with_an_rfc8935_code(payload: dict[str, Any]) -> None:
    try:
        verified = read_claims(payload, transmitter(), now=1_700_000_000)
    except SetError as exc:
        assert exc.code in SetErrorCode
        return
    assert verified.issuer == "https://idp.example.com"
    assert "sub" not in payload and "exp" not in payload
    assert 0 < len(verified.events) <= 8


record_fields = st.fixed_dictionaries(
    {
        "v": st.just(1) | json_scalars,
        "effect": st.sampled_from([e.value for e in Effect]) | json_scalars,
        "key": st.sampled_from(["u|i|s", "d|dev", "x|y"]) | json_scalars,
        "at": st.floats(0, 2e9) | json_scalars,
        "until": st.floats(0, 2e9) | json_scalars,
        "event": st.text(min_size=1, max_size=10) | json_scalars,
        "origin": st.text(min_size=1, max_size=10) | json_scalars,
        "id": st.text(min_size=1, max_size=10) | json_scalars,
        "written": st.floats(0, 2e9) | json_scalars,
        "reason": st.sampled_from(["session_revoked", "device_noncompliant", "allowed"])
        | json_scalars,
        "compliant": st.booleans() | json_scalars,
        "also": st.lists(st.lists(st.sampled_from(["u|i|s", "d|x", "bad"]), max_size=3), max_size=3)
        | json_values,
        "details": json_values,
    }
)


@given(record_fields | json_values)
@settings(max_examples=400)
def test_stored_records_decode_or_are_refused(value: Any) -> None:
    try:
        raw = json.dumps(value, allow_nan=False).encode()
    except ValueError:
        return
    try:
        record = decode(raw)
    except RecordError:
        return
    assert decode(encode(record)) == record  # what decodes, round-trips


@given(st.binary(max_size=200))
def test_stored_bytes_never_break_the_decoder(raw: bytes) -> None:
    with contextlib.suppress(RecordError):
        assert isinstance(decode(raw), Record)
