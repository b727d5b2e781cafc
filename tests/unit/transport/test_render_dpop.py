"""DPoP refusals answer with the DPoP scheme's challenge (RFC 9449 §7.1): the error code the
failed check calls for, the accepted proof algorithms, and with nonces a fresh DPoP-Nonce
(§9). Certificate-bound token refusals stay RFC 6750 Bearer challenges (RFC 8705 §3.1)."""

from __future__ import annotations

import pytest

from app.decision import Decision, DpopChallenge
from app.identity.dpop import CHALLENGE_ERRORS
from app.reasons import Reason
from app.settings import Response
from app.transport.render import render

SETTINGS = Response()
ALGS = ("ES256", "EdDSA", "PS256", "RS256")

PROOF_REASONS = [r for r in Reason if r.value.startswith("dpop_proof_")]


@pytest.mark.parametrize("reason", PROOF_REASONS)
def test_a_broken_proof_answers_invalid_dpop_proof(reason: Reason) -> None:
    out = render(Decision(False, reason, "d", "v", dpop=DpopChallenge(ALGS)), SETTINGS)
    assert out.status == 401
    assert out.headers["www-authenticate"] == (
        f'DPoP realm="ztauthz", error="invalid_dpop_proof", '
        f'error_description="{_description(reason)}", algs="ES256 EdDSA PS256 RS256"'
    )
    assert "dpop-nonce" not in out.headers


@pytest.mark.parametrize(
    "reason",
    [
        Reason.DPOP_KEY_MISMATCH,
        Reason.DPOP_TOKEN_UNBOUND,
        Reason.TOKEN_BOUND_AS_BEARER,
        Reason.SENDER_CONSTRAINT_REQUIRED,
    ],
)
def test_a_binding_that_does_not_hold_answers_invalid_token_in_the_dpop_scheme(
    reason: Reason,
) -> None:
    out = render(Decision(False, reason, "d", "v", dpop=DpopChallenge(ALGS)), SETTINGS)
    assert out.status == 401
    challenge = out.headers["www-authenticate"]
    assert challenge.startswith('DPoP realm="ztauthz", error="invalid_token", error_description="')
    assert challenge.endswith(', algs="ES256 EdDSA PS256 RS256"')


def test_a_missing_nonce_answers_use_dpop_nonce_with_a_fresh_nonce() -> None:
    decision = Decision(
        False, Reason.DPOP_NONCE_REQUIRED, "d", "v", dpop=DpopChallenge(ALGS, nonce="n0nce")
    )
    out = render(decision, SETTINGS)
    assert out.status == 401
    assert 'error="use_dpop_nonce"' in out.headers["www-authenticate"]
    assert out.headers["dpop-nonce"] == "n0nce"


def test_a_certificate_bound_token_without_its_certificate_is_a_bearer_invalid_token() -> None:
    out = render(Decision(False, Reason.TOKEN_CERTIFICATE_MISMATCH, "d", "v"), SETTINGS)
    assert out.headers["www-authenticate"].startswith(
        'Bearer realm="ztauthz", error="invalid_token"'
    )


def test_every_dpop_reason_has_a_challenge_error_and_is_a_401() -> None:
    for reason in Reason:
        if reason.value.startswith("dpop_"):
            assert reason in CHALLENGE_ERRORS
            assert render(Decision(False, reason, "d", "v"), SETTINGS).status == 401


def test_the_replay_cache_down_is_a_503_without_a_challenge() -> None:
    out = render(Decision(False, Reason.STORE_UNAVAILABLE, "d", "v"), SETTINGS)
    assert out.status == 503
    assert "www-authenticate" not in out.headers


def _description(reason: Reason) -> str:
    from app.reasons import describe

    return describe(reason)
