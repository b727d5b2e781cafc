"""``ztauthz revoke``: the operator's kill switch, through the admin API of a running ztauthz.

    ztauthz revoke --config ztauthz.yaml --subject alice --reason "incident 42"
    ztauthz revoke --admin-url http://10.0.0.5:9100 --token-file /run/secrets/admin \\
        --device laptop-7 --for 2h

``--config`` takes the admin listener's address and ``signals.admin.token_file`` from the
configuration; ``--admin-url`` and ``--token-file`` name them directly (and win). With Redis
as the shared store, the revocation reaches every replica (docs/continuous-access-evaluation.md).
Exit codes: 0 revoked, 1 refused or unreachable, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_revoke_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "revoke",
        help="kill switch: revoke a subject's, session's or device's access at once",
        description="Revoke access through the admin API of a running ztauthz: tokens of the "
        "subject (or session) issued until now are refused (401 access_revoked); requests with "
        "the device's evidence are refused (403 device_revoked) for --for.",
    )
    parser.add_argument("--config", type=Path, help="ztauthz configuration (admin address, token)")
    parser.add_argument("--admin-url", help="admin listener base URL, e.g. http://127.0.0.1:9100")
    parser.add_argument("--token-file", type=Path, help="file holding the admin bearer token")
    parser.add_argument("--subject", help="the sub whose tokens are refused")
    parser.add_argument("--issuer", help="only tokens of this issuer (default: every issuer)")
    parser.add_argument("--session", help="the session (sid claim) whose tokens are refused")
    parser.add_argument("--device", help="the device whose requests are refused")
    parser.add_argument(
        "--for", dest="duration", help="how long the device stays refused (e.g. 2h)"
    )
    parser.add_argument("--reason", help="why (recorded in the event and the decision log)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (10)")
    parser.set_defaults(func=_cmd_revoke)


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"ztauthz revoke: {message}", file=sys.stderr)
    return code


def _target(args: argparse.Namespace) -> tuple[str, Path] | str:
    """(admin URL, token file) or an error message."""
    url, token_file = args.admin_url, args.token_file
    if args.config is not None:
        from app.settings import ConfigError, load_settings

        try:
            settings = load_settings(args.config)
        except ConfigError as exc:
            return f"invalid configuration:\n{exc}"
        admin = settings.server.admin
        host = "127.0.0.1" if admin.host in ("0.0.0.0", "::", "") else admin.host  # noqa: S104
        url = url or f"http://{host}:{admin.port}"
        token_file = token_file or settings.signals.admin.token_file
    if url is None:
        return "give --admin-url or --config"
    if token_file is None:
        return "give --token-file, or set signals.admin.token_file in the configuration"
    return str(url).rstrip("/"), Path(token_file)


def _cmd_revoke(args: argparse.Namespace) -> int:
    import httpx

    if args.subject is None and args.session is None and args.device is None:
        return _fail("name --subject, --session or --device")
    target = _target(args)
    if isinstance(target, str):
        return _fail(target)
    url, token_file = target
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        return _fail(f"cannot read {token_file}: {exc.strerror}")
    body: dict[str, Any] = {
        name: value
        for name, value in (
            ("subject", args.subject),
            ("issuer", args.issuer),
            ("session", args.session),
            ("device", args.device),
            ("duration", args.duration),
            ("reason", args.reason),
        )
        if value is not None
    }
    try:
        response = httpx.post(
            url + "/admin/v1/revocations",
            json=body,
            headers={"authorization": f"Bearer {token}"},
            timeout=args.timeout,
            follow_redirects=False,
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        return _fail(f"cannot reach {url}: {type(exc).__name__}", EXIT_FAILED)
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": response.text[:200]}
    if response.status_code != 201:
        detail = answer.get("error", "") if isinstance(answer, dict) else ""
        if response.status_code == 404:
            detail = "the kill switch is off (set signals.admin.token_file)"
        return _fail(
            f"refused ({response.status_code}): {detail} {answer.get('problems', '') if isinstance(answer, dict) else ''}".rstrip(),
            EXIT_FAILED,
        )
    print(json.dumps(answer, indent=2, sort_keys=True))
    if not answer.get("shared", True):
        print(
            "note: applied on that replica; the shared store is unreachable, other replicas "
            "learn it once it answers again",
            file=sys.stderr,
        )
    return EXIT_OK
