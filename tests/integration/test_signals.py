"""Continuous access evaluation through real Envoy: SETs pushed to one ztauthz (RFC 8935),
the next request refused; every refused SET answered with its RFC 8935 code and changing
nothing; the operator's kill switch through the ``ztauthz revoke`` CLI.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.dev.keys import DevKeys
from app.dev.procs import ProcessGroup
from app.dev.stack import ztauthz_command
from app.dev.tokens import forge_alg_none
from app.dev.transmitter import (
    SESSION_REVOKED,
    device_compliance_change,
    session_revoked,
    subject,
)
from tests.integration.signals_support import RECEIVER_AUDIENCE, Fleet, start_fleet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str]) -> Iterator[Fleet]:
    with ProcessGroup() as group:
        yield start_fleet(group, tmp_path_factory.mktemp("signals"), child_env)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def reason(response: httpx.Response) -> str | None:
    try:
        body: Any = response.json()
    except ValueError:
        return None
    return body.get("reason") if isinstance(body, dict) else None


def send(fleet: Fleet, set_token: str, **overrides: str) -> httpx.Response:
    headers = {
        "content-type": "application/secevent+jwt",
        "authorization": f"Bearer {fleet.push_token}",
        **overrides,
    }
    return httpx.post(
        fleet.replicas[0].push_url, content=set_token.encode(), headers=headers, timeout=10
    )


def revoke_session(fleet: Fleet, **parts: str) -> httpx.Response:
    return send(
        fleet,
        session_revoked(
            fleet.keys,
            issuer=fleet.issuer_url,
            audience=RECEIVER_AUDIENCE,
            sub_id=subject(fleet.issuer_url, **parts),
        ),
    )


def test_the_next_request_after_a_202_is_refused(fleet: Fleet) -> None:
    replica = fleet.replicas[0]
    user, sid = unique("user"), unique("sid")
    token = fleet.token(user, sid=sid)
    other_session = fleet.token(user, sid=unique("sid"))
    assert replica.get("/invoices", token).status_code == 200
    answer = revoke_session(fleet, session=sid)
    assert answer.status_code == 202, answer.text
    refused = replica.get("/invoices", token)
    assert refused.status_code == 401, fleet.logs()
    assert reason(refused) == "session_revoked"
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    # only that session: the same user's other session goes on
    assert replica.get("/invoices", other_session).status_code == 200
    # a session-revoked event about the user ends every session issued before it
    assert revoke_session(fleet, sub=user).status_code == 202
    assert reason(replica.get("/invoices", other_session)) == "session_revoked"
    # a token issued after the event is a new sign-in: allowed
    time.sleep(1.1)  # iat is in whole seconds: the new token's must be after the event's
    later = fleet.token(user, sid=unique("sid"))
    assert replica.get("/invoices", later).status_code == 200


def test_a_non_compliant_device_is_refused_until_a_later_compliant_event(fleet: Fleet) -> None:
    replica = fleet.replicas[0]
    device = unique("laptop")
    token = fleet.token(unique("user"), device_id=device)
    bystander = fleet.token(unique("user"), device_id=unique("laptop"))
    assert replica.get("/invoices", token).status_code == 200
    now = time.time()
    change = device_compliance_change(
        fleet.keys,
        issuer=fleet.issuer_url,
        audience=RECEIVER_AUDIENCE,
        device=device,
        compliant=False,
        now=now,
    )
    assert send(fleet, change).status_code == 202
    refused = replica.get("/invoices", token)
    assert (refused.status_code, reason(refused)) == (403, "device_noncompliant")
    assert replica.get("/invoices", bystander).status_code == 200
    back = device_compliance_change(
        fleet.keys,
        issuer=fleet.issuer_url,
        audience=RECEIVER_AUDIENCE,
        device=device,
        compliant=True,
        now=now + 1,
    )
    assert send(fleet, back).status_code == 202
    assert replica.get("/invoices", token).status_code == 200


def _claims(fleet: Fleet, user: str, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": fleet.issuer_url,
        "aud": RECEIVER_AUDIENCE,
        "iat": int(time.time()),
        "jti": uuid.uuid4().hex,
        "sub_id": {"format": "iss_sub", "iss": fleet.issuer_url, "sub": user},
        "events": {SESSION_REVOKED: {"event_timestamp": int(time.time())}},
    }
    claims.update(changes)
    return claims


def _signed(keys: DevKeys, claims: dict[str, Any]) -> str:
    import jwt

    kid, key = keys.private_key_for("RS256")
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "secevent+jwt"})


def test_refused_sets_get_their_rfc8935_error_and_change_nothing(fleet: Fleet) -> None:
    replica = fleet.replicas[0]
    user = unique("user")
    token = fleet.token(user)
    assert replica.get("/invoices", token).status_code == 200
    untrusted = DevKeys.generate()
    valid = _signed(fleet.keys, _claims(fleet, user))
    assert send(fleet, valid).status_code == 202  # the replay below is of this one
    assert reason(replica.get("/invoices", token)) == "session_revoked"
    victim = unique("user")  # every refused SET below is about this user
    victim_token = fleet.token(victim)
    before = replica.readyz().json()["signals"]["records"]
    cases: list[tuple[str, str, dict[str, str]]] = [
        ("not a JWS at all", "invalid_request", {}),
        (
            forge_alg_none(_claims(fleet, victim), headers={"typ": "secevent+jwt"}),
            "invalid_request",
            {},
        ),
        (_signed(untrusted, _claims(fleet, victim)), "invalid_key", {}),
        (valid, "invalid_request", {}),  # replayed
        (
            _signed(fleet.keys, _claims(fleet, victim, aud="urn:someone-else")),
            "invalid_audience",
            {},
        ),
        (
            _signed(fleet.keys, _claims(fleet, victim, iss="https://evil.example")),
            "invalid_issuer",
            {},
        ),
        (
            _signed(
                fleet.keys,
                _claims(
                    fleet,
                    victim,
                    sub_id={"format": "iss_sub", "iss": "https://other.example", "sub": victim},
                ),
            ),
            "access_denied",
            {},
        ),
        (
            _signed(fleet.keys, _claims(fleet, victim)),
            "authentication_failed",
            {"authorization": "Bearer wrong-token-0123456789"},
        ),
        (
            _signed(fleet.keys, _claims(fleet, victim)),
            "authentication_failed",
            {"authorization": ""},
        ),
        (
            _signed(fleet.keys, _claims(fleet, victim)),
            "invalid_request",
            {"content-type": "application/jwt"},
        ),
        (_signed(fleet.keys, _claims(fleet, victim, sub=victim)), "invalid_request", {}),
    ]
    for body, code, headers in cases:
        answer = send(fleet, body, **headers)
        assert answer.status_code == 400, (code, answer.text)
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["err"] == code, answer.text
        assert replica.get("/invoices", victim_token).status_code == 200, code
    assert replica.readyz().json()["signals"]["records"] == before


def test_the_kill_switch_through_the_cli(fleet: Fleet, child_env: dict[str, str]) -> None:
    replica = fleet.replicas[0]
    user = unique("user")
    token = fleet.token(user)
    assert replica.get("/invoices", token).status_code == 200
    command = [*ztauthz_command(), "revoke", "--admin-url", replica.admin_url]
    wrong = fleet.workdir / "wrong-token"
    wrong.write_text("not-the-admin-token-at-all\n", encoding="utf-8")
    refused = subprocess.run(
        [*command, "--token-file", str(wrong), "--subject", user],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 1, refused.stderr
    assert replica.get("/invoices", token).status_code == 200
    done = subprocess.run(
        [
            *command,
            "--token-file",
            str(fleet.admin_token_file),
            "--subject",
            user,
            "--reason",
            "incident 7",
        ],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    action = json.loads(done.stdout)["id"]
    answer = replica.get("/invoices", token)
    assert (answer.status_code, reason(answer)) == (401, "access_revoked")
    device = unique("laptop")
    device_token = fleet.token(unique("user"), device_id=device)
    by_config = subprocess.run(
        [
            *ztauthz_command(),
            "revoke",
            "--config",
            str(replica.config_path),
            "--device",
            device,
            "--for",
            "1h",
        ],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=30,
        check=False,
    )
    assert by_config.returncode == 0, by_config.stderr
    answer = replica.get("/invoices", device_token)
    assert (answer.status_code, reason(answer)) == (403, "device_revoked")
    # recorded in the decision log (stdout) and as an event (stderr): both in the process log
    log = Path(fleet.processes["ztauthz-0"].log_path).read_text(encoding="utf-8")
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(x.get("kind") == "revocation" and x.get("action") == action for x in lines)
    assert any(x.get("event") == "access_revoked" and x.get("action") == action for x in lines)


def test_signal_metrics(fleet: Fleet) -> None:
    text = httpx.get(fleet.replicas[0].admin_url + "/metrics", timeout=5).text
    assert 'ztauthz_signals_events_received_total{transmitter="idp",type="session-revoked"}' in text
    assert 'ztauthz_signals_events_rejected_total{error="invalid_key",transmitter="idp"}' in text
    assert 'ztauthz_signals_refusals_total{reason="session_revoked"}' in text
    assert "ztauthz_signals_store_up 1.0" in text


def test_dev_signal_command(fleet: Fleet, child_env: dict[str, str]) -> None:
    replica = fleet.replicas[0]
    user = unique("user")
    token = fleet.token(user)
    assert replica.get("/invoices", token).status_code == 200
    pushed = subprocess.run(
        [
            *ztauthz_command(),
            "dev",
            "signal",
            "session-revoked",
            "--receiver",
            replica.push_url,
            "--token-file",
            str(fleet.workdir / "push-token"),
            "--keys",
            str(fleet.workdir / "keys"),
            "--issuer",
            fleet.issuer_url,
            "--aud",
            RECEIVER_AUDIENCE,
            "--sub",
            user,
        ],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=30,
        check=False,
    )
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert pushed.stdout.startswith("202")
    assert reason(replica.get("/invoices", token)) == "session_revoked"
