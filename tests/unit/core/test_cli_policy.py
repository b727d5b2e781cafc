"""``ztauthz policy check | policy test`` and ``ztauthz explain``, run as CI runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.dev.keys import DevKeys
from app.dev.tokens import mint

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "docs" / "examples" / "least-privilege"
SHIPPED = ROOT / "policies"
THURSDAY = "2026-11-26T10:00:00Z"


def ztauthz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    copy = tmp_path / "policies"
    shutil.copytree(EXAMPLES, copy)
    return copy


# --- policy check ------------------------------------------------------------------------------


def test_check_passes_with_warnings_and_strict_fails_on_them(examples: Path) -> None:
    ok = ztauthz("policy", "check", str(examples), "--now", THURSDAY)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines() == [
        f"{examples}/grants/break-glass-db.yaml:6: warning: grant 'dana-break-glass-inc-4711' "
        "expires in 3:00:00",
        f"{examples}/grants/oncall-auditors.yaml:5: warning: grant 'oncall-auditors-2026-11-26' "
        "expires in 16:00:00",
        f"{examples}: ok (7 rules, 2 grants, 2 warning(s))",
    ]
    assert ok.stderr == ""  # the verdict is the result: stdout (issue 16)
    strict = ztauthz("policy", "check", str(examples), "--now", THURSDAY, "--strict")
    assert strict.returncode == 1
    later = ztauthz("policy", "check", str(examples), "--now", "2026-12-01T00:00:00Z")
    assert "expired 4 days, 11:00:00 ago" in later.stdout


def test_check_fails_on_errors_with_file_and_line(examples: Path) -> None:
    access = examples / "access.yaml"
    text = access.read_text()
    access.write_text(
        text.replace('&& "documents:read" in subject.scopes', "&& tenants.size() > 0")
    )
    broken = ztauthz("policy", "check", str(examples), "--grant-max-duration", "3h")
    assert broken.returncode == 1
    lines = broken.stdout.splitlines()
    # A folded (>) block reports the expression's first line: folding removed the others.
    when_line = text.splitlines().index('        && "documents:read" in subject.scopes')
    assert f"{access}:{when_line}: spec.rules[4].when: unknown variable(s) tenants;" in lines[0]
    assert "longer than the allowed maximum of 3:00:00" in broken.stdout
    assert "3 error(s)" in broken.stdout  # the CEL error and both grants


def test_check_the_shipped_policies() -> None:
    result = ztauthz("policy", "check", str(SHIPPED), "--strict")
    assert result.returncode == 0, result.stdout + result.stderr


# --- policy test -------------------------------------------------------------------------------


@pytest.mark.parametrize(("directory", "cases"), [(EXAMPLES, 19), (SHIPPED, 13)])
def test_the_shipped_tests_pass(directory: Path, cases: int) -> None:
    result = ztauthz("policy", "test", str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("PASS ") for line in lines) == cases
    assert lines[-1] == f"{cases} passed, 0 failed"


def test_a_failing_case_fails_the_run(examples: Path) -> None:
    tests = examples / "access_test.yaml"
    text = tests.read_text()
    tests.write_text(
        text.replace(
            "expect: {decision: deny, reason: grant_required}",
            "expect: {decision: allow, reason: allowed}",
        )
    )
    line = text.splitlines().index("    - name: restore-without-a-grant") + 1
    result = ztauthz("policy", "test", str(examples))
    assert result.returncode == 1
    assert f"FAIL access/restore-without-a-grant ({tests}:{line})" in result.stdout
    assert "     decision: expected 'allow', got 'deny'" in result.stdout
    assert "     reason: expected 'allowed', got 'grant_required'" in result.stdout
    assert result.stdout.splitlines()[-1] == "18 passed, 1 failed"
    only = ztauthz("policy", "test", str(examples), "--run", "payout")
    assert only.returncode == 0
    assert only.stdout.splitlines()[-1] == "4 passed, 0 failed"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            (
                "expect: {decision: allow, reason: allowed, rule: payouts-approve}",
                "expect: {decision: maybe}",
            ),
            "'maybe' is not one of: allow, deny",
        ),
        (
            ("name: payout-with-password-only-asks-for-step-up", "name: payout-with-recent-mfa"),
            "duplicate case name 'payout-with-recent-mfa'",
        ),
        (("now: 2026-11-26T10:00:00Z", "now: tomorrow"), "'tomorrow' is not a date and time"),
    ],
)
def test_invalid_tests_run_nothing(examples: Path, change: tuple[str, str], message: str) -> None:
    tests = examples / "access_test.yaml"
    tests.write_text(tests.read_text().replace(*change, 1))
    result = ztauthz("policy", "test", str(examples))
    assert result.returncode == 2
    assert message in result.stderr  # nothing ran: the problems are diagnostics
    assert "no case was run" in result.stderr
    assert result.stdout == ""


def test_no_tests_is_not_a_pass(tmp_path: Path) -> None:
    shutil.copy(SHIPPED / "demo.yaml", tmp_path / "demo.yaml")
    result = ztauthz("policy", "test", str(tmp_path))
    assert result.returncode == 2
    assert "no test cases found" in result.stderr


# --- explain -----------------------------------------------------------------------------------


def test_explain_with_a_claims_file(tmp_path: Path) -> None:
    claims = tmp_path / "claims.json"
    claims.write_text(
        json.dumps({"sub": "alice", "groups": ["finance"], "acr": "low", "amr": ["pwd"]})
    )
    args = [
        "explain",
        "--policies",
        str(EXAMPLES),
        "--method",
        "POST",
        "--path",
        "/payouts/7/approve",
    ]
    result = ztauthz(*args, "--claims", str(claims), "--now", THURSDAY)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "decision: deny (401 insufficient_user_authentication) by rule payouts-approve "
        "(policy access)"
    )
    assert "step-up: acr_values=['urn:example:acr:high'] max_age=600" in lines
    at = lines.index(next(line for line in lines if "payouts-approve (access," in line))
    assert lines[at].endswith("matches, conditions fail")
    assert lines[at + 4] == "        ok  subject.groups_any: [finance] vs [finance]"
    assert lines[at + 5].startswith("        NO  auth: acr 'low' in ['urn:example:acr:high']")
    machine = ztauthz(*args, "--claims", str(claims), "--now", THURSDAY, "--json")
    body = json.loads(machine.stdout)
    assert (body["decision"], body["reason"]) == ("deny", "insufficient_user_authentication")
    assert [r["id"] for r in body["rules"] if r["matched"]] == [
        "payouts-approve",
        "untrusted-clients-read-only",
    ]


def test_explain_with_an_unverified_token_allows_and_says_so() -> None:
    token = mint(
        DevKeys.generate(),
        issuer="https://idp.example.com",
        audience="https://api.example.com",
        subject="dana",
        now=1_795_687_200,
        ttl=300,
    )
    result = ztauthz(
        "explain",
        "--policies",
        str(EXAMPLES),
        "--method",
        "POST",
        "--path",
        "/db/restore",
        "-H",
        f"Authorization: Bearer {token}",
        "--now",
        THURSDAY,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "note: token signature NOT verified (give --config to verify it)\n"
    assert "decision: allow (200 allowed) by rule db-restore (policy access)" in result.stdout
    assert "through grants: dana-break-glass-inc-4711" in result.stdout
    assert token not in result.stdout + result.stderr


def test_explain_denies_a_method_no_policy_names_as_the_service_does() -> None:
    """A rule without ``methods`` would match PROPFIND, but the service denies it before any
    rule (405 method_not_allowed): explain says the same."""
    result = ztauthz(
        "explain", "--policies", str(EXAMPLES), "--method", "propfind", "--path", "/healthz"
    )
    assert result.returncode == 1
    assert result.stdout.startswith("decision: deny (405 method_not_allowed): ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--path", "/x"], "give --policies DIR or --config FILE"),
        (
            ["--path", "/x", "--policies", str(EXAMPLES), "-H", "no-colon"],
            "must look like 'Name: value'",
        ),
        (
            ["--path", "/x", "--policies", str(EXAMPLES), "--claims", "/nonexistent.json"],
            "cannot read the token or claims",
        ),
    ],
)
def test_explain_input_errors_exit_2(args: list[str], message: str) -> None:
    result = ztauthz("explain", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_explain_shows_a_sender_constraint(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(
        "apiVersion: ztauthz/v1\nkind: Policy\nmetadata: {name: payments}\nspec:\n  rules:\n"
        "    - id: pay\n      effect: allow\n      match: {methods: [POST], paths: [/pay]}\n"
        "      sender_constrained: dpop\n"
    )
    bearer, bound = tmp_path / "bearer.json", tmp_path / "bound.json"
    bearer.write_text(json.dumps({"sub": "alice"}))
    bound.write_text(json.dumps({"sub": "alice", "cnf": {"jkt": "thumbprint"}}))
    args = ["explain", "--policies", str(policies), "--method", "POST", "--path", "/pay"]
    refused = ztauthz(*args, "--claims", str(bearer))
    assert refused.returncode == 1
    assert refused.stdout.splitlines()[0] == (
        "decision: deny (401 sender_constraint_required) by rule pay (policy payments)"
    )
    assert "NO  sender_constrained: token bound by nothing; rule accepts [dpop]" in refused.stdout
    allowed = ztauthz(*args, "--claims", str(bound))
    assert allowed.returncode == 0, allowed.stdout
    assert "ok  sender_constrained: token bound by [dpop]; rule accepts [dpop]" in allowed.stdout
