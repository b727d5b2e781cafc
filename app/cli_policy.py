"""``ztauthz policy check | policy test`` and ``ztauthz explain``: policy tooling for people and CI.

Exit codes (app/cli_common.py, as CI expects them):

- ``policy check``: 0 valid (warnings are printed), 1 errors (or warnings with ``--strict``).
- ``policy test``: 0 every case passed, 1 a case failed, 2 the policies or the test files are
  invalid or there are no test cases (nothing was run).
- ``explain``: 0 allow, 1 deny, 2 invalid input (policies, token, claims, request).

Output: the result on stdout (``policy check``: its findings and verdict; ``policy test``: the
cases and the tally; ``explain``: the decision and its trace); on stderr what stopped a command
from doing its job (exit 2) and notes about the input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

import yaml

from app.cli_common import EXIT_FAILED, EXIT_OK, add_command
from app.cli_common import EXIT_USAGE as EXIT_INVALID
from app.durations import parse_duration
from app.http_facts import AUTHORIZATION
from app.policy.compile import DEFAULT_GRANT_MAX_DURATION, LoadOptions
from app.policy.loader import compile_policy_dir
from app.policy.problem import Problem
from app.policy.request import Unmatchable, policy_input
from app.policy.schema import as_timestamp
from app.reasons import status_of


def _options(args: argparse.Namespace) -> LoadOptions:
    return LoadOptions(grant_max_duration=args.grant_max_duration)


def _max_duration(text: str) -> float:
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return seconds


def _moment(text: str) -> float:
    try:
        return as_timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _now(args: argparse.Namespace) -> float:
    return float(args.now) if args.now is not None else time.time()


def _print_problems(problems: list[Problem], file: TextIO = sys.stdout) -> None:
    for problem in problems:
        print(problem, file=file)


# --- policy check ------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from app.policy.lint import lint

    problems, compiled = compile_policy_dir(Path(args.dir), _options(args))
    if compiled is not None:
        problems = sorted(problems + lint(compiled, _now(args)), key=lambda p: (p.file, p.line))
    _print_problems(problems)
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    if errors:
        print(f"{len(errors)} error(s), {len(warnings)} warning(s) in {args.dir}")
        return EXIT_FAILED
    if warnings and args.strict:
        print(f"{len(warnings)} warning(s) in {args.dir} (--strict)")
        return EXIT_FAILED
    summary = (
        f"{compiled.rule_count} rules, {len(compiled.grants.grants)} grants" if compiled else ""
    )
    suffix = f", {len(warnings)} warning(s)" if warnings else ""
    print(f"{args.dir}: ok ({summary}{suffix})")
    return EXIT_OK


# --- policy test -------------------------------------------------------------------------------


def cmd_test(args: argparse.Namespace) -> int:
    from app.policy.testing import read_test_files, run_cases

    root = Path(args.dir)
    problems, compiled = compile_policy_dir(root, _options(args))
    errors = [p for p in problems if p.severity == "error"]
    cases, test_problems = read_test_files(root, _now(args))
    if errors or test_problems or compiled is None:
        _print_problems(errors + test_problems, sys.stderr)
        print("policies or tests are invalid; no case was run", file=sys.stderr)
        return EXIT_INVALID
    results = run_cases(compiled, cases, args.run)
    if not results:
        print(f"no test cases found in {root} (files named *_test.yaml)", file=sys.stderr)
        return EXIT_INVALID
    for result in results:
        case = result.case
        if result.passed:
            print(f"PASS {case.title}")
            if args.verbose:
                got = result.outcome.fields()
                print(f"     {got['decision']} {got['reason']} rule={got['rule']}")
            continue
        print(f"FAIL {case.title} ({case.file}:{case.line})")
        for mismatch in result.mismatches:
            print(f"     {mismatch}")
    passed = sum(r.passed for r in results)
    failed = len(results) - passed
    print("-" * 60)
    print(f"{passed} passed, {failed} failed")
    return EXIT_OK if failed == 0 else EXIT_FAILED


# --- explain -----------------------------------------------------------------------------------


def _headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header {item!r} must look like 'Name: value'")
        headers[name.strip().lower()] = value.strip()
    return headers


def _read_claims(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: claims must be a JSON or YAML object")
    return data


def _token(args: argparse.Namespace, headers: Mapping[str, str]) -> str | None:
    if args.token is not None:
        return str(args.token)
    if args.token_file is not None:
        return Path(args.token_file).read_text(encoding="utf-8").strip()
    authorization = headers.get(AUTHORIZATION, "")
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "dpop") and value.strip() else None


async def _verified(token: str, config: Path, now: float) -> Any:
    import httpx

    from app.identity.verify import TokenVerifier, build_key_sources
    from app.settings import load_settings

    settings = load_settings(config)
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        sources = build_key_sources(settings.issuers, client, time.time)
        verifier = TokenVerifier(settings.issuers, sources, settings.token.max_bytes)
        return await verifier.verify(token, now)


def cmd_explain(args: argparse.Namespace) -> int:
    import jwt

    from app.identity.errors import TokenError
    from app.identity.principal import Principal
    from app.policy.explain import explain, render_text
    from app.policy.testing import principal_for_claims as principal_from_test_claims
    from app.settings import ConfigError, load_settings

    now = _now(args)
    try:
        headers = _headers(args.header)
    except ValueError as exc:
        print(f"ztauthz explain: {exc}", file=sys.stderr)
        return EXIT_INVALID
    policies_dir = Path(args.policies) if args.policies else None
    options = _options(args)
    if policies_dir is None:
        if args.config is None:
            print("ztauthz explain: give --policies DIR or --config FILE", file=sys.stderr)
            return EXIT_INVALID
        try:
            settings = load_settings(Path(args.config))
        except ConfigError as exc:
            print(f"ztauthz explain: invalid configuration:\n{exc}", file=sys.stderr)
            return EXIT_INVALID
        policies_dir = settings.policies
        options = LoadOptions(
            grant_max_duration=settings.grants.max_duration.total_seconds(),
            networks=frozenset(settings.evidence.networks),
        )
    problems, compiled = compile_policy_dir(policies_dir, options)
    if compiled is None:
        _print_problems([p for p in problems if p.severity == "error"], sys.stderr)
        return EXIT_INVALID
    try:
        request = policy_input(args.method.upper(), args.host, args.path, MappingProxyType(headers))
    except Unmatchable as exc:  # as the service decides it, before any rule
        print(f"decision: deny ({status_of(exc.reason)} {exc.reason.value}): {exc.detail}")
        return EXIT_FAILED
    principal: Principal | None = None
    try:
        if args.claims is not None:
            principal = principal_from_test_claims(_read_claims(Path(args.claims)), now)
        else:
            token = _token(args, headers)
            if token is not None and args.config is not None:
                principal = asyncio.run(_verified(token, Path(args.config), now))
            elif token is not None:
                print(
                    "note: token signature NOT verified (give --config to verify it)",
                    file=sys.stderr,
                )
                claims = jwt.decode(token, options={"verify_signature": False})
                principal = principal_from_test_claims(claims, now)
    except TokenError as exc:
        print(f"decision: deny ({exc.reason.value}): the token is refused: {exc}")
        return EXIT_FAILED
    except (OSError, ValueError, yaml.YAMLError, jwt.PyJWTError, ConfigError) as exc:
        print(f"ztauthz explain: cannot read the token or claims: {exc}", file=sys.stderr)
        return EXIT_INVALID
    explanation = explain(compiled, request, principal, now)
    if args.json:
        print(json.dumps(_as_json(explanation), indent=2))
    else:
        print(render_text(explanation, principal, now), end="")
    return EXIT_OK if explanation.verdict.allow else EXIT_FAILED


def _as_json(explanation: Any) -> dict[str, Any]:
    verdict = explanation.verdict
    return {
        "decision": "allow" if verdict.allow else "deny",
        "reason": verdict.reason.value,
        "rule": verdict.rule_id,
        "policy": verdict.policy,
        "grants": list(verdict.grants),
        "policy_version": explanation.policy_version,
        "rules": [
            {
                "id": t.rule.id,
                "effect": t.rule.effect,
                "where": f"{t.rule.file}:{t.rule.line}",
                "matched": t.matched,
                "applies": t.applies,
                "checks": [{"check": c.label, "ok": c.ok, "note": c.note} for c in t.checks],
            }
            for t in explanation.traces
        ],
    }


# --- wiring ------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grant-max-duration",
        type=_max_duration,
        default=f"{DEFAULT_GRANT_MAX_DURATION / 3600:g}h",  # argparse parses it with type=
        metavar="DURATION",
        help="the longest a grant may last, as grants.max_duration in the configuration",
    )
    parser.add_argument(
        "--now",
        type=_moment,
        default=None,
        metavar="TIME",
        help="decide as of this RFC 3339 time (default: the current time)",
    )


def add_policy_commands(
    policy_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    check = add_command(
        policy_sub,
        "check",
        "validate and lint a policy directory",
        "Validate and lint a policy directory: prints each problem (file:line) and a verdict "
        "on stdout; exits 1 on errors (or on warnings with --strict).",
    )
    check.add_argument("dir", help="the policy directory")
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    _common(check)
    check.set_defaults(func=cmd_check)

    test = add_command(
        policy_sub,
        "test",
        "run the *_test.yaml cases of a policy directory",
        "Run the *_test.yaml cases of a policy directory: PASS/FAIL per case and a tally on "
        "stdout; exits 1 if a case fails, 2 if the policies or tests are invalid or none exist.",
    )
    test.add_argument("dir", help="the policy directory")
    test.add_argument(
        "--run", metavar="REGEX", help="only the cases whose suite/name matches (default: all)"
    )
    test.add_argument("-v", "--verbose", action="store_true", help="show passing outcomes")
    _common(test)
    test.set_defaults(func=cmd_test)

    explain = add_command(
        sub,
        "explain",
        "decide one request and show, rule by rule, why",
        "Decide one request offline against a policy directory and show, rule by rule, why: "
        "exits 0 on allow, 1 on deny, 2 on invalid input.",
    )
    explain.add_argument("--method", default="GET", help="the request's HTTP method")
    explain.add_argument(
        "--host", default="api.example.com", help="the request's host (:authority)"
    )
    explain.add_argument("--path", required=True, help="the original path (query included)")
    explain.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'Name: value'",
        help="a request header (repeatable); a bearer Authorization header is the token "
        "unless --token, --token-file or --claims gives one",
    )
    who = explain.add_mutually_exclusive_group()
    who.add_argument(
        "--token", help="a bearer token (its signature is verified only with --config)"
    )
    who.add_argument("--token-file", metavar="FILE", help="a file holding the bearer token")
    who.add_argument(
        "--claims", metavar="FILE", help="a JSON or YAML file of (already verified) claims"
    )
    explain.add_argument(
        "--policies", metavar="DIR", help="policy directory (default: the one in --config)"
    )
    explain.add_argument(
        "--config", metavar="FILE", help="ztauthz configuration: its policies and issuers"
    )
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    _common(explain)
    explain.set_defaults(func=cmd_explain)
