"""Least privilege in depth, through real Envoy: step-up, grants, CEL, hot reload.

One stack for this module runs the example policies of docs/policies.md (docs/examples/least-privilege,
copied to a temporary directory so tests can change it) plus grants and a probe policy written
here relative to the wall clock, with a 200 ms reload interval.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.dev.envoy import SHIPPED_ENVOY_CONFIG
from app.dev.procs import ProcessGroup
from app.dev.stack import Reply, Stack, http_request, start_stack
from app.dev.stack_config import Ports
from app.dev.tokens import mint

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples" / "least-privilege"
BASE_CONFIG = Path(__file__).resolve().parent / "ztauthz.yaml"

PROBE = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {{name: probe}}
spec:
  rules:
    - id: {rule}
      effect: {effect}
      match: {{methods: [GET], paths: [/reload/probe]}}
      subject: {{groups_any: [finance]}}
"""
PROBE_OPEN = PROBE.format(rule="probe-open", effect="allow")
PROBE_CLOSED = PROBE.format(rule="probe-closed", effect="deny")


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def grant_yaml(name: str, subject: str, start: float, end: float) -> str:
    return (
        f"apiVersion: ztauthz/v1\nkind: Grant\nmetadata: {{name: {name}}}\nspec:\n"
        f"  subject: {subject}\n  grant: break-glass-db\n  not_before: {iso(start)}\n"
        f"  expires: {iso(end)}\n  approved_by: erin\n  reason: integration test\n"
        f"  ticket: TEST-1\n"
    )


@pytest.fixture(scope="module")
def lp_stack(
    tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str]
) -> Iterator[tuple[Stack, ProcessGroup]]:
    workdir = tmp_path_factory.mktemp("lp-stack")
    policies = workdir / "policies"
    shutil.copytree(EXAMPLES, policies)
    now = time.time()
    (policies / "grants" / "live.yaml").write_text(
        "---\n".join(
            [
                grant_yaml("gina-now", "gina", now - 600, now + 3600),
                grant_yaml("hank-past", "hank", now - 7200, now - 3600),
                grant_yaml("ivy-later", "ivy", now + 3600, now + 7200),
            ]
        )
    )
    (policies / "probe.yaml").write_text(PROBE_OPEN)
    config = yaml.safe_load(BASE_CONFIG.read_text(encoding="utf-8"))
    config["reload"] = {"interval": "200ms"}
    config["grants"] = {"max_duration": "8h"}
    # CEL sees only the headers Envoy sends to ztauthz: the example's x-client-tier must be
    # allow-listed (ext_authz allowed_headers), as docs/policies.md says.
    shipped = SHIPPED_ENVOY_CONFIG.read_text(encoding="utf-8")
    anchor = "                          - exact: authorization\n"
    assert anchor in shipped
    template = workdir / "envoy-template.yaml"
    template.write_text(
        shipped.replace(anchor, anchor + anchor.replace("authorization", "x-client-tier"))
    )
    with ProcessGroup() as group:
        stack = start_stack(
            group,
            workdir=workdir,
            ports=Ports.ephemeral(),
            policies=policies,
            config=config,
            envoy_template=template,
            env=child_env,
        )
        yield stack, group


@pytest.fixture(scope="module")
def lp(lp_stack: tuple[Stack, ProcessGroup]) -> Stack:
    return lp_stack[0]


@pytest.fixture(scope="module")
def token(lp: Stack) -> Callable[..., str]:
    def make(subject: str = "alice", **kwargs: Any) -> str:
        return mint(lp.keys, issuer=lp.issuer_url, audience=lp.audience, subject=subject, **kwargs)

    return make


def send(stack: Stack, method: str, path: str, bearer: str | None = None, **headers: str) -> Reply:
    sent = dict(headers)
    if bearer is not None:
        sent["Authorization"] = f"Bearer {bearer}"
    return http_request(stack.ports.envoy, method, path, sent)


def reached_upstream(reply: Reply) -> bool:
    body = reply.json()
    return isinstance(body, dict) and "header_list" in body


def readyz(stack: Stack) -> dict[str, Any]:
    body = http_request(stack.ports.admin, "GET", "/readyz").json()
    assert isinstance(body, dict)
    return body


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the reload"
        time.sleep(0.05)


def decision_lines(stack: Stack) -> list[dict[str, Any]]:
    lines = []
    for raw in stack.log("ztauthz").read_text(encoding="utf-8", errors="replace").splitlines():
        if raw.startswith("{"):
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if line.get("kind") == "decision" or line.get("event") == "decision":
                lines.append(line)
    return lines


# --- step-up ----------------------------------------------------------------------------------


def test_step_up_challenge_reaches_the_client_as_rfc_9470(
    lp: Stack, token: Callable[..., str]
) -> None:
    weak = token(groups=["finance"], extra_claims={"acr": "urn:example:acr:low", "amr": ["pwd"]})
    reply = send(lp, "POST", "/payouts/7/approve", weak)
    assert reply.status == 401
    assert not reached_upstream(reply)
    assert reply.headers["www-authenticate"] == (
        'Bearer realm="ztauthz", error="insufficient_user_authentication", '
        'error_description="a stronger or more recent authentication is required", '
        'acr_values="urn:example:acr:high", max_age=600'
    )
    assert reply.json()["reason"] == "insufficient_user_authentication"

    strong = token(
        groups=["finance"],
        extra_claims={
            "acr": "urn:example:acr:high",
            "amr": ["pwd", "mfa"],
            "auth_time": int(time.time()) - 30,
        },
    )
    allowed = send(lp, "POST", "/payouts/7/approve", strong)
    assert allowed.status == 200 and reached_upstream(allowed)
    assert allowed.json()["headers"]["x-auth-rule"] == "payouts-approve"

    stale = token(
        groups=["finance"],
        extra_claims={"acr": "urn:example:acr:high", "amr": ["mfa"], "auth_time": 1},
    )
    assert send(lp, "POST", "/payouts/7/approve", stale).status == 401


# --- grants -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "status", "why"),
    [
        ("gina", 200, None),
        ("hank", 403, "grant_inactive"),  # expired an hour ago
        ("ivy", 403, "grant_inactive"),  # starts in an hour
        ("mallory", 403, "grant_required"),  # never had one
    ],
)
def test_a_grant_allows_only_inside_its_window(
    lp: Stack, token: Callable[..., str], subject: str, status: int, why: str | None
) -> None:
    reply = send(lp, "POST", "/db/restore", token(subject))
    assert reply.status == status
    assert reached_upstream(reply) is (status == 200)
    if why is not None:
        assert reply.json()["reason"] == why
    else:
        decision_id = reply.json()["headers"]["x-auth-decision-id"]

        def logged() -> bool:
            found = [d for d in decision_lines(lp) if d.get("decision_id") == decision_id]
            return bool(found) and found[0].get("grants") == ["gina-now"]

        wait_until(logged, timeout=5)


def test_a_grant_stops_counting_when_it_expires_without_a_reload(
    lp: Stack, token: Callable[..., str]
) -> None:
    policies = lp.policies
    now = time.time()
    expires = float(int(now) + 3)
    before = readyz(lp)["policy_version"]
    (policies / "grants" / "short.yaml").write_text(
        grant_yaml("jack-short", "jack", now - 60, expires)
    )
    wait_until(lambda: readyz(lp)["policy_version"] != before)
    version = readyz(lp)["policy_version"]
    jack = token("jack", ttl=600)
    assert time.time() < expires - 0.5, "the reload took too long to observe the window"
    assert send(lp, "POST", "/db/restore", jack).status == 200
    time.sleep(max(0.0, expires - time.time()) + 0.3)
    late = send(lp, "POST", "/db/restore", jack)
    assert (late.status, late.json()["reason"]) == (403, "grant_inactive")
    assert readyz(lp)["policy_version"] == version  # no reload was involved


# --- CEL --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "claims", "headers", "status", "why"),
    [
        ("GET", "/tenants/acme/documents/q4.pdf", {"tenant": "acme"}, {}, 200, None),
        (
            "GET",
            "/tenants/globex/documents/q4.pdf",
            {"tenant": "acme"},
            {},
            403,
            "condition_not_met",
        ),
        ("GET", "/tenants/acme/documents/q4.pdf", {}, {}, 403, "condition_error"),
        ("POST", "/db/restore", {}, {"X-Client-Tier": "untrusted"}, 403, "denied_by_rule"),
    ],
)
def test_cel_conditions_allow_and_deny_as_written(
    lp: Stack,
    token: Callable[..., str],
    method: str,
    path: str,
    claims: dict[str, Any],
    headers: dict[str, str],
    status: int,
    why: str | None,
) -> None:
    bearer = token("gina", scopes=["documents:read"], extra_claims=claims)
    reply = send(lp, method, path, bearer, **headers)
    assert reply.status == status
    assert reached_upstream(reply) is (status == 200)
    if why is not None:
        assert reply.json()["reason"] == why


# --- explain against the live issuer ---------------------------------------------------------


def test_explain_verifies_a_token_with_the_configured_issuer(
    lp: Stack, token: Callable[..., str], child_env: dict[str, str]
) -> None:
    weak = token(groups=["finance"], extra_claims={"acr": "urn:example:acr:low"})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "explain",
            "--config",
            str(lp.config_path),
            "--method",
            "POST",
            "--path",
            "/payouts/7/approve",
            "--token",
            weak,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
        env=child_env,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT verified" not in result.stdout
    assert result.stdout.startswith(
        "decision: deny (401 insufficient_user_authentication) by rule payouts-approve"
    )
    forged = weak[:-4] + ("AAAA" if not weak.endswith("AAAA") else "BBBB")
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "explain",
            "--config",
            str(lp.config_path),
            "--path",
            "/payouts/7/approve",
            "--token",
            forged,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
        env=child_env,
    )
    assert refused.returncode == 1
    assert "token_signature_invalid" in refused.stdout


# --- hot reload -------------------------------------------------------------------------------


def test_reload_under_load_changes_decisions_without_a_failed_or_wrong_answer(
    lp: Stack, token: Callable[..., str]
) -> None:
    probe = lp.policies / "probe.yaml"
    probe.write_text(PROBE_OPEN)
    wait_until(lambda: send(lp, "GET", "/reload/probe", token(groups=["finance"])).status == 200)
    old_version = readyz(lp)["policy_version"]
    bearer = token(groups=["finance"], ttl=600)
    answers: list[tuple[int, str | None, str | None]] = []
    # 300 requests paced over 3 s; the policy changes on disk after the first 100.
    started = time.monotonic()
    for number in range(300):
        if number == 100:
            probe.write_text(PROBE_CLOSED)
        reply = send(lp, "GET", "/reload/probe", bearer)
        if reply.status == 200:
            seen = reply.json()["headers"]
            answers.append((200, seen["x-auth-rule"], seen["x-auth-policy-version"]))
        else:
            answers.append((reply.status, reply.json().get("reason"), None))
        time.sleep(max(0.0, started + (number + 1) * 0.01 - time.monotonic()))
    new_version = readyz(lp)["policy_version"]
    assert new_version != old_version
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 403}, sorted(set(statuses))
    first_deny = statuses.index(403)
    assert first_deny > 0
    # Before the swap every answer is the old policy's allow; after it, never an allow again.
    assert all(a == (200, "probe-open", old_version) for a in answers[:first_deny])
    assert all(a == (403, "denied_by_rule", None) for a in answers[first_deny:])
    assert len(answers) - first_deny >= 50


def settled_lines(stack: Stack) -> list[dict[str, Any]]:
    """ztauthz's "heap settled" log lines (app/heap.py), in order."""
    lines = stack.log("ztauthz").read_text(encoding="utf-8").splitlines()
    found = [json.loads(line) for line in lines if '"heap settled' in line]
    return [entry for entry in found if entry.get("logger") == "ztauthz"]


def test_the_heap_settles_at_start_and_after_every_swapped_reload(
    lp: Stack, token: Callable[..., str]
) -> None:
    def reloads() -> int:
        return int(readyz(lp)["policy_reload"]["reloads"])

    def one_settle_per_swap_and_one_at_start() -> bool:
        return len(settled_lines(lp)) == 1 + reloads()

    bearer = token(groups=["finance"])
    probe = lp.policies / "probe.yaml"
    probe.write_text(PROBE_OPEN)
    wait_until(lambda: send(lp, "GET", "/reload/probe", bearer).status == 200)
    wait_until(one_settle_per_swap_and_one_at_start)
    assert all(entry["frozen_objects"] > 10_000 for entry in settled_lines(lp))
    swapped = reloads()
    probe.write_text(PROBE_CLOSED)
    try:
        wait_until(lambda: reloads() == swapped + 1)
        wait_until(one_settle_per_swap_and_one_at_start)
    finally:
        probe.write_text(PROBE_OPEN)
    wait_until(lambda: reloads() == swapped + 2)
    wait_until(one_settle_per_swap_and_one_at_start)
    assert send(lp, "GET", "/reload/probe", bearer).status == 200


def test_a_broken_reload_changes_nothing(lp: Stack, token: Callable[..., str]) -> None:
    bearer = token(groups=["finance"])
    before_version = readyz(lp)["policy_version"]
    before = send(lp, "GET", "/reload/probe", bearer).status
    broken = lp.policies / "zz-broken.yaml"
    broken.write_text(
        PROBE_OPEN.replace("name: probe", "name: broken").replace("effect: allow", "effect: permit")
    )
    try:
        wait_until(lambda: readyz(lp)["policy_reload"]["last_error"] is not None)
        status = readyz(lp)
        assert status["policy_version"] == before_version
        assert status["status"] == "ready"
        problems = status["policy_reload"]["last_error"]["problems"]
        assert any(p.startswith(f"{broken}:") and "effect" in p for p in problems), problems
        for _ in range(20):
            assert send(lp, "GET", "/reload/probe", bearer).status == before
    finally:
        broken.unlink()
    wait_until(lambda: readyz(lp)["policy_reload"]["last_error"] is None)
    assert readyz(lp)["policy_version"] == before_version


def test_sighup_is_a_reload_not_a_hangup(lp_stack: tuple[Stack, ProcessGroup]) -> None:
    stack, group = lp_stack
    process = next(p for p in group.processes if p.name == "ztauthz")
    assert process.pid is not None
    reloads = readyz(stack)["policy_reload"]["failures"]
    os.kill(process.pid, signal.SIGHUP)
    time.sleep(0.5)
    assert process.running
    status = readyz(stack)
    assert status["status"] == "ready"
    assert status["policy_reload"]["failures"] == reloads
