"""Property-based tests of the DPoP parsers of untrusted input: the proof header, the htu
normalization and the nonce check never fail in any way but a refusal, and a refusal is never
an acceptance in disguise."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.dev.dpop import DpopKey
from app.identity.dpop import DpopError, ProofRequest, ProofRules, normalize_uri, verify_proof
from app.identity.dpop_nonce import NonceIssuer
from app.identity.errors import TokenError
from app.identity.extract import extract_credential

NOW = 1_800_000_000.0
RULES = ProofRules(frozenset({"ES256", "RS256", "PS256", "EdDSA"}), 60.0, 5.0, 8192)
REQUEST = ProofRequest("GET", "https://api.example.com/x", "token")
KEY = DpopKey.generate("ES256")
VALID = KEY.proof("GET", "https://api.example.com/x", access_token="token", now=NOW)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=300))
def test_any_header_value_is_refused_with_a_dpop_reason(value: str) -> None:
    try:
        verify_proof(value, REQUEST, RULES, NOW)
    except DpopError as exc:
        assert exc.reason.value.startswith("dpop_proof_")
    else:  # pragma: no cover - a random string is never a signed proof
        raise AssertionError("an arbitrary string passed as a proof")


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(st.sampled_from(["typ", "alg", "jwk", "kid", "crit"]), json_values),
    st.dictionaries(
        st.sampled_from(["jti", "htm", "htu", "iat", "ath", "nonce", "exp"]), json_values
    ),
)
def test_any_header_and_claims_with_the_valid_signature_are_refused(
    header: dict[str, Any], claims: dict[str, Any]
) -> None:
    # A structurally arbitrary proof carrying a real signature (of another input): whatever
    # its members, it is refused, and only with a DpopError.
    signature = VALID.split(".")[2]
    value = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{signature}"
    try:
        verify_proof(value, REQUEST, RULES, NOW)
    except DpopError as exc:
        assert exc.reason.value.startswith("dpop_proof_")
    else:  # pragma: no cover
        raise AssertionError("a proof with a foreign signature passed")


@settings(max_examples=500)
@given(st.text(max_size=120))
def test_normalize_uri_never_raises_and_is_idempotent(uri: str) -> None:
    normalized = normalize_uri(uri)
    if normalized is not None:
        assert normalized.startswith(("http://", "https://"))
        assert "?" not in normalized and "#" not in normalized
        assert normalize_uri(normalized) == normalized


@settings(max_examples=300)
@given(
    st.sampled_from(["http", "https", "HTTPS"]),
    st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,2}", fullmatch=True),
    st.lists(st.from_regex(r"[A-Za-z0-9._~-]{0,8}", fullmatch=True), max_size=5),
)
def test_an_equivalent_spelling_normalizes_alike(
    scheme: str, host: str, segments: list[str]
) -> None:
    path = "/" + "/".join(segments)
    plain = normalize_uri(f"{scheme.lower()}://{host}{path}")
    port = 443 if scheme.lower() == "https" else 80
    spelled = normalize_uri(f"{scheme}://{host.upper()}:{port}{path}?q=1#f")
    assert plain is not None and plain == spelled


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_the_nonce_check_never_raises(nonce: str) -> None:
    issuer = NonceIssuer(b"k" * 32, 300.0)
    assert issuer.accepts(nonce, NOW) is (
        nonce == issuer.current(NOW) or nonce == issuer.current(NOW - 300)
    )


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_the_authorization_header_parser_never_raises_anything_else(value: str) -> None:
    try:
        credential = extract_credential({"authorization": value}, None)
    except TokenError:
        return
    assert credential is not None and credential.scheme in ("bearer", "dpop")
    assert credential.token and " " not in credential.token and "," not in credential.token
