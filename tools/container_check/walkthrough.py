"""The docker-compose walkthrough of docs/containers.md, step by step, against the real stack.

Each function is one documented step and returns its summary notes; CheckFailed says what did
not behave as written. Step 6 edits deploy/compose/policies/invoices.yaml as the docs do and
always puts the original back.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from tools.container_check.engine import Engine
from tools.container_check.shell import Answer, CheckFailed, http, run, say, wait_for

ENVOY: Final = "http://127.0.0.1:10000"
JAEGER: Final = "http://127.0.0.1:16686"
# docs/containers.md step 1: each pair (a, b) means "a is healthy before b" (the service_healthy
# dependencies of compose.yaml; tests/deploy holds the two together).
HEALTH_ORDER: Final = (("oidc", "ztauthz"), ("ztauthz", "envoy"), ("upstream", "envoy"))
UP_BOUND: Final = 120.0  # from the first container start to the last one healthy
DOWN_BOUND: Final = 10.0
RELOAD_INTERVAL: Final = 2.0  # reload.interval, the default the compose config keeps
RELOAD_MARGIN: Final = 4.0
TRACE_TIMEOUT: Final = 45.0  # ztauthz and Envoy export every 5 s; the collector batches
# docs/containers.md step 6: the edit (readers may create invoices) and the broken change.
POLICY_FILE: Final = "policies/invoices.yaml"
POLICY_EDIT: Final = (
    b'subject: { scopes_all: ["invoices:write"] }',
    b'subject: { scopes_any: ["invoices:read", "invoices:write"] }',
)
POLICY_BREAK: Final = (b"effect: deny", b"effect: maybe")


class Compose:
    """``docker compose`` in deploy/compose, with the check's override file when there is one."""

    def __init__(self, engine: Engine, directory: Path, override: Path | None) -> None:
        self.engine = engine
        self.directory = directory
        files = ["-f", "compose.yaml", "-f", str(override)] if override else []
        self.base = [engine.docker, "compose", *files]

    def __call__(
        self,
        *args: str,
        timeout: float = 120,
        check: bool = True,
        quiet: bool = False,
        stream: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        return run([*self.base, *args], cwd=self.directory, timeout=timeout, check=check,
                   quiet=quiet, stream=stream)  # fmt: skip

    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self("config", "--format", "json", quiet=True).stdout)
        return data

    def logs(self, service: str) -> list[str]:
        result = self("logs", "--no-color", "--no-log-prefix", service, quiet=True)
        return (result.stdout + result.stderr).splitlines()

    def token(self, *scopes: str) -> str:
        """Step 3: ``TOKEN=$(docker compose exec -T oidc node /demo/token.mjs SCOPE...)``."""
        lines = self("exec", "-T", "oidc", "node", "/demo/token.mjs", *scopes).stdout.split()
        if len(lines) != 1 or lines[0].count(".") != 2:
            raise CheckFailed(f"token.mjs printed {lines!r}, not one JWT")
        return lines[0]


def events(engine: Engine, project: str, since: float, until: float) -> list[dict[str, Any]]:
    """The engine's container events of the compose project between two times."""
    lines = run(
        [engine.docker, "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}",
         "--filter", "type=container",
         "--filter", f"label=com.docker.compose.project={project}",
         "--format", "{{json .}}"],
        quiet=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    return [json.loads(line) for line in lines if line.strip()]


def _service(event: dict[str, Any]) -> str:
    return str(event.get("Actor", {}).get("Attributes", {}).get("com.docker.compose.service"))


def first_times(found: list[dict[str, Any]], action: str) -> dict[str, float]:
    """Service -> when it first did ``action`` (seconds since the epoch)."""
    times: dict[str, float] = {}
    for event in found:
        if event.get("Action", event.get("status")) == action:
            times.setdefault(_service(event), int(event["timeNano"]) / 1e9)
    return times


def order_problems(healthy: dict[str, float], order: tuple[tuple[str, str], ...]) -> list[str]:
    problems = []
    for first, then in order:
        if first not in healthy or then not in healthy:
            problems.append(f"{first if first not in healthy else then} never became healthy")
        elif healthy[first] > healthy[then]:
            problems.append(f"{then} was healthy before {first}")
    return problems


def up(compose: Compose, project: str, config: dict[str, Any]) -> list[str]:
    """Step 1: ``docker compose up --build --wait``: healthy in the documented order, in time."""
    since = time.time()
    compose("up", "--build", "--wait", timeout=3600, stream=True)
    found = events(compose.engine, project, since, time.time())
    compose("ps", stream=True)
    started = first_times(found, "start")
    healthy = first_times(found, "health_status: healthy")
    checked = {n for n, s in config["services"].items() if s.get("healthcheck")}
    problems = order_problems(healthy, HEALTH_ORDER)
    problems += [f"{n} never became healthy" for n in sorted(checked - healthy.keys())]
    if problems:
        raise CheckFailed("; ".join(problems))
    begin = min(started.values())
    took = max(healthy.values()) - begin
    if took > UP_BOUND:
        raise CheckFailed(f"healthy after {took:.0f} s, over the bound of {UP_BOUND:g} s")
    order = sorted(healthy, key=healthy.__getitem__)
    return [
        "healthy: " + ", ".join(f"{n} +{healthy[n] - begin:.1f} s" for n in order),
        "in order: " + ", ".join(f"{a} < {b}" for a, b in HEALTH_ORDER),
    ]


def _expect(answer: Answer, status: int, what: str) -> Answer:
    if answer.status != status:
        raise CheckFailed(f"{what}: {answer.status}, not {status}: {answer.body[:300]}")
    return answer


def no_token() -> list[str]:
    """Step 2: no token, 401 with a Bearer challenge."""
    answer = _expect(http("GET", f"{ENVOY}/invoices"), 401, "GET /invoices without a token")
    challenge = answer.headers.get("www-authenticate", "")
    if not challenge.startswith('Bearer realm="ztauthz"'):
        raise CheckFailed(f"challenge {challenge!r}")
    return ["401, " + challenge]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def reader_allowed(compose: Compose) -> list[str]:
    """Step 3: a reader's token reads invoices; the upstream echoes ztauthz's identity headers."""
    answer = _expect(http("GET", f"{ENVOY}/invoices", bearer(compose.token("invoices:read"))),
                     200, "GET /invoices with invoices:read")  # fmt: skip
    headers = answer.json().get("headers")
    subject = headers.get("x-auth-subject") if isinstance(headers, dict) else None
    if subject != "interop-client-a":
        raise CheckFailed(f"the upstream saw x-auth-subject {subject!r}")
    return ["200, upstream saw x-auth-subject: interop-client-a"]


def denials(compose: Compose) -> tuple[list[str], str]:
    """Step 4: reader POST 403 no_matching_rule, writer POST 200, writer /admin 403
    denied_by_rule. Returns the notes and the first 403's decision id (for step 5)."""
    reader = compose.token("invoices:read")
    denied = _expect(http("POST", f"{ENVOY}/invoices", bearer(reader)), 403, "reader POST")
    body = denied.json()
    if body.get("reason") != "no_matching_rule" or body.get("decision") != "deny":
        raise CheckFailed(f"reader POST: {denied.body}")
    decision_id = str(body.get("decision_id"))
    if denied.headers.get("x-auth-decision-id") != decision_id:
        raise CheckFailed("the 403's decision_id is not its x-auth-decision-id header")
    writer = compose.token("invoices:read", "invoices:write")
    _expect(http("POST", f"{ENVOY}/invoices", bearer(writer)), 200, "writer POST")
    admin = _expect(http("GET", f"{ENVOY}/admin/users", bearer(writer)), 403, "writer /admin")
    if admin.json().get("reason") != "denied_by_rule":
        raise CheckFailed(f"writer /admin/users: {admin.body}")
    return ["reader POST 403 no_matching_rule, writer POST 200, /admin 403 denied_by_rule"], (
        decision_id
    )


def decision_line(compose: Compose, decision_id: str) -> dict[str, Any] | None:
    for line in compose.logs("ztauthz"):
        if decision_id in line and line.startswith("{"):
            record: dict[str, Any] = json.loads(line)
            if record.get("kind") == "decision" and record.get("decision_id") == decision_id:
                return record
    return None


def envoy_parented_check(traces: list[dict[str, Any]]) -> str | None:
    """The id of a trace in which a ``ztauthz.check`` span of ztauthz descends from a span of
    Envoy (``envoy-ingress``), in Jaeger's JSON; None when there is none."""
    for trace in traces:
        services = {key: p.get("serviceName") for key, p in trace.get("processes", {}).items()}
        spans = {s["spanID"]: s for s in trace.get("spans", [])}
        for span in spans.values():
            if span.get("operationName") != "ztauthz.check":
                continue
            if services.get(span.get("processID")) != "ztauthz":
                continue
            current, hops = span, 0
            while hops < 20:
                parents = [r["spanID"] for r in current.get("references", [])
                           if r.get("refType") == "CHILD_OF"]  # fmt: skip
                parent = spans.get(parents[0]) if parents else None
                if parent is None:
                    break
                if services.get(parent.get("processID")) == "envoy-ingress":
                    return str(trace.get("traceID"))
                current, hops = parent, hops + 1
    return None


def traces_and_logs(compose: Compose, decision_id: str) -> list[str]:
    """Step 5: the trace in Jaeger (through the collector), the decision-log line in the logs."""
    record = wait_for("the 403's decision-log line in `docker compose logs ztauthz`",
                      lambda: decision_line(compose, decision_id), 15)  # fmt: skip
    if record.get("status") != 403 or record.get("reason") != "no_matching_rule":
        raise CheckFailed(f"decision-log line: {record}")

    def trace() -> str | None:
        answer = http("GET", f"{JAEGER}/api/traces?service=envoy-ingress&limit=100")
        data = answer.json().get("data") if answer.status == 200 else None
        return envoy_parented_check(data) if isinstance(data, list) else None

    trace_id = wait_for("a trace of Envoy with ztauthz.check inside, in Jaeger",
                        trace, TRACE_TIMEOUT, every=2)  # fmt: skip
    return [f"decision line {decision_id[:8]}..; trace {trace_id[:8]}.. envoy-ingress > ztauthz"]


def _count(compose: Compose, event: str) -> int:
    return sum(f'"event":"{event}"' in line for line in compose.logs("ztauthz"))


@contextmanager
def restored(path: Path) -> Iterator[bytes]:
    original = path.read_bytes()
    try:
        yield original
    finally:
        if path.read_bytes() != original:
            path.write_bytes(original)
            say(f"  restored {path}")


def _changed(original: bytes, change: tuple[bytes, bytes]) -> bytes:
    if original.count(change[0]) != 1:
        raise CheckFailed(f"the documented edit no longer applies: {change[0]!r} not found once")
    return original.replace(*change)


def _reload(compose: Compose, path: Path, content: bytes, event: str) -> float:
    before = _count(compose, event)
    path.write_bytes(content)
    started = time.monotonic()
    bound = RELOAD_INTERVAL + RELOAD_MARGIN
    wait_for(f"{event} in the logs", lambda: True if _count(compose, event) > before else None,
             bound, every=0.2)  # fmt: skip
    return time.monotonic() - started


def policy_reload(compose: Compose) -> list[str]:
    """Step 6: an edit is reloaded within reload.interval; a broken one is refused with its
    file and line, and the last good policies keep serving."""
    path = compose.directory / POLICY_FILE
    reader = bearer(compose.token("invoices:read"))
    with restored(path) as original:
        edited = _changed(original, POLICY_EDIT)
        took = _reload(compose, path, edited, "policies_reloaded")
        _expect(http("POST", f"{ENVOY}/invoices", reader), 200, "reader POST after the edit")
        _reload(compose, path, _changed(edited, POLICY_BREAK), "policies_rejected")
        line = next(x for x in reversed(compose.logs("ztauthz")) if "policies_rejected" in x)
        problems = json.loads(line).get("problems", [])
        where = [p for p in problems if "invoices.yaml:" in p]
        if not where:
            raise CheckFailed(f"policies_rejected names no file and line: {problems}")
        _expect(http("POST", f"{ENVOY}/invoices", reader), 200, "last good policies")
        _reload(compose, path, original, "policies_reloaded")
        _expect(http("POST", f"{ENVOY}/invoices", reader), 403, "reader POST, original back")
    return [f"reloaded in {took:.1f} s; refused {where[0].split(': ')[0]}; last good kept"]


def down(compose: Compose, project: str) -> list[str]:
    """Step 7: ``docker compose down`` within the bound, ztauthz exiting by itself (0)."""
    since = time.time()
    started = time.monotonic()
    compose("down", timeout=120)
    took = time.monotonic() - started
    found = events(compose.engine, project, since, time.time())
    codes = {
        _service(e): str(e["Actor"]["Attributes"].get("exitCode"))
        for e in found
        if e.get("Action", e.get("status")) == "die"
    }
    if codes.get("ztauthz") != "0":
        raise CheckFailed(f"ztauthz exited {codes.get('ztauthz')} (137: killed), not 0")
    if took > DOWN_BOUND:
        raise CheckFailed(f"down took {took:.1f} s, over {DOWN_BOUND:g} s")
    killed = sorted(s for s, c in codes.items() if c == "137")
    return [f"{took:.1f} s; ztauthz exit 0" + (f"; killed: {killed}" if killed else "")]
