"""CEL conditions (``when:``): compiled once at load, evaluated per request, errors deny.

Expressions use the Common Expression Language (the PyPI package ``common-expression-language``)
over these variables, built once per request and only when a rule with ``when:`` is reached:

- ``request``: ``method``, ``host`` (normalized), ``path`` (decoded, normalized), ``headers``
  (lower-cased names -> values; ``authorization``, ``cookie`` and ``proxy-authorization`` are
  never exposed).
- ``subject``: ``null`` without a token; otherwise ``id`` (sub), ``issuer``, ``groups`` and
  ``scopes`` (lists, including those added by active grants), ``grants`` (names of active
  grants), ``client_id``, ``acr``, ``amr``, ``auth_time`` and ``claims`` (the verified payload).
- ``device``, ``location``, ``workload``: the gathered evidence (app/evidence), only its known
  keys, so ``has(device.managed)`` tells whether the source said and ``device.managed`` without
  it is an error. ``device``: ``id``, ``source``, ``managed``, ``compliant``, ``os_name``,
  ``os_version``, ``disk_encrypted``, ``screen_lock``, ``risk_score``, ``assessed_at``, ``age``
  (seconds); ``location``: ``client_ip``, ``networks`` (names), ``country``, ``ip_country``,
  ``claim_country``; ``workload``: ``id`` (SPIFFE ID), ``trust_domain``, ``source``.
- ``time``: ``now`` (a UTC timestamp) and ``unix`` (epoch seconds).
- ``signals``: what security events said about the token since it was issued
  (app/signals/view.py), only the known keys: ``assurance`` (``namespace``,
  ``current_level``, ``previous_level``, ``change_direction``, ``at``: the latest CAEP
  assurance-level-change), ``claims`` (the new values of CAEP token-claims-change events) and
  ``claims_changed_at``; ``{}`` when nothing was said.

A syntax error or a name outside these variables is a load error with the rule's ``file:line``.
At evaluation any error (a missing key, a type mismatch, a non-boolean result) is a
``CelEvalError``; the evaluator turns it into a deny (``condition_error``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.http_facts import CREDENTIAL_HEADERS
from app.identity.principal import Principal
from app.policy.cel_engine import Context, Program, cel_compile

VARIABLES: frozenset[str] = frozenset(
    {"request", "subject", "device", "location", "workload", "time", "signals"}
)
HIDDEN_HEADERS: frozenset[str] = CREDENTIAL_HEADERS

# Names the comprehension macros bind: `list.exists(x, ...)`, `map(k, v, ...)` and the rest.
_MACRO_BINDINGS = re.compile(
    r"\.\s*(?:all|exists|exists_one|existsOne|map|filter|transformList|transformMap)\s*\(\s*"
    r"([A-Za-z_][A-Za-z0-9_]*)\s*,(?:\s*([A-Za-z_][A-Za-z0-9_]*)\s*,)?"
)
_POSITION = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")


class CelCompileError(Exception):
    """``line`` is 1-based within the expression."""

    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class CelEvalError(Exception):
    """Evaluation failed; ``detail`` is the library's message (never request data we add)."""


@dataclass(frozen=True, slots=True, eq=False)
class CelCondition:
    source: str
    program: Program = field(repr=False)
    constant: bool | None = None  # the value when the expression reads no variable


def compile_condition(source: str) -> CelCondition:
    """Compile ``source``; raise ``CelCompileError`` for syntax errors and unknown names."""
    try:
        program = cel_compile(source)
    except Exception as exc:  # the library raises ValueError; nothing else is expected
        raise _compile_error(str(exc)) from None
    bound = {name for match in _MACRO_BINDINGS.finditer(source) for name in match.groups() if name}
    unknown = sorted(set(program.variables()) - VARIABLES - bound)
    if unknown:
        raise CelCompileError(
            f"unknown variable(s) {', '.join(unknown)}; available: {', '.join(sorted(VARIABLES))}",
            _line_of(source, unknown[0]),
        )
    constant: bool | None = None
    if not program.variables():
        try:
            value = program.execute({})
        except Exception as exc:
            raise CelCompileError(f"the expression fails: {exc}") from None
        if not isinstance(value, bool):
            raise CelCompileError(f"the expression must be a boolean, not {type(value).__name__}")
        constant = value
    return CelCondition(source=source, program=program, constant=constant)


def _compile_error(text: str) -> CelCompileError:
    found = _POSITION.search(text)
    if found is None:
        return CelCompileError(f"invalid CEL: {text.splitlines()[0] if text else 'error'}")
    line, column, message = int(found.group(1)), int(found.group(2)), found.group(3)
    return CelCompileError(f"invalid CEL at {line}:{column}: {message}", line)


def _line_of(source: str, name: str) -> int:
    found = re.search(rf"\b{re.escape(name)}\b", source)
    return 1 if found is None else source.count("\n", 0, found.start()) + 1


def principal_variables(
    principal: Principal, groups: frozenset[str], scopes: frozenset[str], grants: tuple[str, ...]
) -> dict[str, Any]:
    return {
        "id": principal.subject,
        "issuer": principal.issuer,
        "groups": sorted(groups),
        "scopes": sorted(scopes),
        "grants": list(grants),
        "client_id": principal.client_id,
        "acr": principal.acr,
        "amr": sorted(principal.amr),
        "auth_time": principal.auth_time,
        "claims": dict(principal.claims),
    }


def build_context(
    *,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    subject: Mapping[str, Any] | None,
    evidence: Mapping[str, Mapping[str, Any]],
    now: float,
    signals: Mapping[str, Any] | None = None,
) -> Context:
    """The variables of one request, converted once for every condition it reaches."""
    variables: dict[str, Any] = {
        "request": {
            "method": method,
            "host": host,
            "path": path,
            "headers": {k: v for k, v in headers.items() if k not in HIDDEN_HEADERS},
        },
        "subject": None if subject is None else dict(subject),
        "device": dict(evidence.get("device", {})),
        "location": dict(evidence.get("location", {})),
        "workload": dict(evidence.get("workload", {})),
        "time": {"now": datetime.fromtimestamp(now, UTC), "unix": int(now)},
        "signals": dict(signals or {}),
    }
    try:
        return Context(variables)
    except Exception as exc:  # a claim CEL cannot represent (e.g. an integer over 64 bits)
        raise CelEvalError(f"cannot convert the request: {exc}") from None


def evaluate_condition(condition: CelCondition, context: Context) -> bool:
    """True or False, or ``CelEvalError`` for anything else (errors deny)."""
    if condition.constant is not None:
        return condition.constant
    try:
        value = condition.program.execute(context)
    except Exception as exc:  # KeyError, TypeError, RuntimeError, ...: all mean "cannot decide"
        raise CelEvalError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(value, bool):
        raise CelEvalError(f"the expression returned {type(value).__name__}, not a boolean")
    return value
