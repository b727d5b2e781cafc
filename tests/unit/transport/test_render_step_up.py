"""The RFC 9470 step-up challenge in WWW-Authenticate."""

from __future__ import annotations

import json
import re

import pytest

from app.decision import Decision, StepUp
from app.reasons import Reason, describe
from app.settings import Response
from app.transport.render import render

# RFC 9110 auth-param: token "=" ( token / quoted-string ), comma separated after the scheme.
AUTH_PARAM = re.compile(
    r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*'
)


def params(challenge: str) -> dict[str, str]:
    scheme, _, rest = challenge.partition(" ")
    assert scheme == "Bearer"
    found: dict[str, str] = {}
    for part in rest.split(", "):
        match = AUTH_PARAM.fullmatch(part)
        assert match is not None, part
        found[match.group(1)] = match.group(2).strip('"')
    return found


@pytest.mark.parametrize(
    ("step_up", "extra"),
    [
        (
            StepUp(("urn:acr:high", "urn:acr:max"), 600),
            {"acr_values": "urn:acr:high urn:acr:max", "max_age": "600"},
        ),
        (StepUp((), 300), {"max_age": "300"}),
        (StepUp(("phr",), None), {"acr_values": "phr"}),
        (StepUp((), None), {}),
        (None, {}),
        # Defence in depth: a value that would break the quoted string is never written.
        (StepUp(('bad"value', "ok"), None), {"acr_values": "ok"}),
    ],
)
def test_step_up_challenge(step_up: StepUp | None, extra: dict[str, str]) -> None:
    decision = Decision(
        False, Reason.INSUFFICIENT_USER_AUTHENTICATION, "d1", "sha256:v", "r", "p", step_up=step_up
    )
    out = render(decision, Response(realm="api"))
    assert out.status == 401
    assert params(out.headers["www-authenticate"]) == {
        "realm": "api",
        "error": "insufficient_user_authentication",
        "error_description": describe(Reason.INSUFFICIENT_USER_AUTHENTICATION),
        **extra,
    }
    body = json.loads(out.body)
    assert body["reason"] == "insufficient_user_authentication"
    assert "rule" not in body


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        (Reason.GRANT_REQUIRED, 403),
        (Reason.GRANT_INACTIVE, 403),
        (Reason.OUTSIDE_TIME_WINDOW, 403),
        (Reason.CONDITION_NOT_MET, 403),
        (Reason.CONDITION_ERROR, 403),
    ],
)
def test_other_new_reasons_are_403_without_a_challenge(reason: Reason, status: int) -> None:
    out = render(Decision(False, reason, "d1", "sha256:v"), Response())
    assert out.status == status
    assert "www-authenticate" not in out.headers
    assert json.loads(out.body)["reason"] == reason.value
