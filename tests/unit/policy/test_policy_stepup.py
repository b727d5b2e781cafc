"""Step-up authentication: ``auth:`` on acr, amr and auth_time; 401 with what to step up to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.decision import StepUp
from app.identity.errors import TokenError
from app.identity.principal import Principal, read_auth_strength
from app.policy.evaluate import PolicyInput, evaluate
from app.policy.index import CompiledPolicies
from app.policy.loader import check_policy_dir
from app.reasons import Reason, status_of

CompilePolicies = Callable[..., CompiledPolicies]
MakePrincipal = Callable[..., Principal]

NOW = 1_795_687_200.0

POLICY = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: p}
spec:
  rules:
    - id: approve
      effect: allow
      match: {methods: [POST], paths: ["/payouts/*/approve"]}
      subject: {groups_any: [finance]}
      auth:
        acr_any: ["urn:acr:high", "urn:acr:max"]
        amr_all: [mfa, hwk]
        max_age: 10m
    - id: recent-only
      effect: allow
      match: {methods: [POST], paths: [/password]}
      auth: {max_age: 5m}
    - id: mfa-only
      effect: allow
      match: {methods: [GET], paths: [/keys]}
      auth: {amr_all: [mfa]}
    - id: keys-for-admins
      effect: allow
      match: {methods: [GET], paths: [/keys]}
      subject: {groups_any: [admins]}
"""

STRONG: dict[str, Any] = {
    "groups": ["finance"],
    "acr": "urn:acr:high",
    "amr": ["pwd", "mfa", "hwk"],
    "auth_time": int(NOW) - 60,
}


def weaker(**changes: Any) -> dict[str, Any]:
    return {**STRONG, **changes}


APPROVE_CHALLENGE = StepUp(acr_values=("urn:acr:high", "urn:acr:max"), max_age=600)


@pytest.mark.parametrize(
    ("method", "path", "who", "reason", "step_up"),
    [
        ("POST", "/payouts/1/approve", STRONG, Reason.ALLOWED, None),
        ("POST", "/payouts/1/approve", weaker(acr="urn:acr:max"), Reason.ALLOWED, None),
        # Exactly max_age old still counts; one second more does not.
        ("POST", "/payouts/1/approve", weaker(auth_time=int(NOW) - 600), Reason.ALLOWED, None),
        (
            "POST",
            "/payouts/1/approve",
            weaker(auth_time=int(NOW) - 601),
            Reason.INSUFFICIENT_USER_AUTHENTICATION,
            APPROVE_CHALLENGE,
        ),
        (
            "POST",
            "/payouts/1/approve",
            weaker(auth_time=None),
            Reason.INSUFFICIENT_USER_AUTHENTICATION,
            APPROVE_CHALLENGE,
        ),
        (
            "POST",
            "/payouts/1/approve",
            weaker(acr="urn:acr:low"),
            Reason.INSUFFICIENT_USER_AUTHENTICATION,
            APPROVE_CHALLENGE,
        ),
        (
            "POST",
            "/payouts/1/approve",
            weaker(acr=None),
            Reason.INSUFFICIENT_USER_AUTHENTICATION,
            APPROVE_CHALLENGE,
        ),
        (
            "POST",
            "/payouts/1/approve",
            weaker(amr=["pwd", "mfa"]),
            Reason.INSUFFICIENT_USER_AUTHENTICATION,
            APPROVE_CHALLENGE,
        ),
        # Not in the group: no challenge, stepping up would not help.
        (
            "POST",
            "/payouts/1/approve",
            weaker(groups=["sales"], acr=None),
            Reason.NO_MATCHING_RULE,
            None,
        ),
        ("POST", "/password", weaker(auth_time=int(NOW) - 299), Reason.ALLOWED, None),
        (
            "POST",
            "/password",
            weaker(auth_time=int(NOW) - 301),
            Reason.INSUFFICIENT_USER_AUTHENTICATION,
            StepUp((), 300),
        ),
        # Another rule allows without step-up: no challenge.
        ("GET", "/keys", weaker(amr=["pwd"], groups=["admins"]), Reason.ALLOWED, None),
        (
            "GET",
            "/keys",
            weaker(amr=["pwd"]),
            Reason.INSUFFICIENT_USER_AUTHENTICATION,
            StepUp((), None),
        ),
    ],
)
def test_step_up_semantics(
    compile_policies: CompilePolicies,
    principal: MakePrincipal,
    method: str,
    path: str,
    who: dict[str, Any],
    reason: Reason,
    step_up: StepUp | None,
) -> None:
    policies = compile_policies(POLICY)
    verdict = evaluate(policies, PolicyInput(method, "h", path), principal(**who), NOW)
    assert verdict.reason is reason
    assert verdict.step_up == step_up


def test_step_up_is_a_401_and_anonymous_requests_are_asked_for_a_token_first(
    compile_policies: CompilePolicies,
) -> None:
    assert status_of(Reason.INSUFFICIENT_USER_AUTHENTICATION) == 401
    verdict = evaluate(compile_policies(POLICY), PolicyInput("POST", "h", "/password"), None, NOW)
    assert verdict.reason is Reason.TOKEN_MISSING


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, (None, frozenset(), None)),
        (
            {"acr": "1", "amr": ["pwd", "otp"], "auth_time": 1_700_000_000},
            ("1", frozenset({"pwd", "otp"}), 1_700_000_000),
        ),
        ({"auth_time": 1_700_000_000.9}, (None, frozenset(), 1_700_000_000)),
    ],
)
def test_auth_strength_claims_are_read(
    payload: dict[str, Any], expected: tuple[object, ...]
) -> None:
    assert read_auth_strength(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        {"acr": 1},
        {"amr": "mfa"},
        {"amr": ["mfa", 2]},
        {"auth_time": "yesterday"},
        {"auth_time": True},
        {"auth_time": float("nan")},
        {"auth_time": float("inf")},
        {"auth_time": 10**400},
    ],
)
def test_auth_strength_claims_of_the_wrong_type_refuse_the_token(payload: dict[str, Any]) -> None:
    with pytest.raises(TokenError) as caught:
        read_auth_strength(payload)
    assert caught.value.reason is Reason.TOKEN_CLAIMS_INVALID


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("effect: deny\n      auth: {amr_all: [mfa]}", "only allow rules can have auth"),
        (
            "effect: allow\n      anonymous: true\n      auth: {amr_all: [mfa]}",
            "an anonymous rule needs no token, so it cannot have auth",
        ),
        (
            'effect: allow\n      auth: {acr_any: ["has space"]}',
            "an acr value must be visible ASCII",
        ),
        (
            "effect: allow\n      auth: {acr_any: ['say \"hi\"']}",
            "an acr value must be visible ASCII",
        ),
        ("effect: allow\n      auth: {max_age: soon}", "expected a duration such as 30s"),
        ("effect: allow\n      auth: {}", "must not be empty"),
    ],
)
def test_invalid_auth_conditions_are_load_errors(tmp_path: Path, rule: str, message: str) -> None:
    (tmp_path / "p.yaml").write_text(
        "apiVersion: ztauthz/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  rules:\n"
        f"    - id: r\n      {rule}\n"
    )
    problems = [str(p) for p in check_policy_dir(tmp_path)]
    assert len(problems) == 1 and message in problems[0], problems
    assert problems[0].startswith(f"{tmp_path / 'p.yaml'}:")
