"""One structured JSON line per check, on stdout.

Only fixed fields are written: never a header value, token, cookie or query string.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from app.decision import Decision
from app.request import RequestContext

SCHEMA_VERSION = 1


class DecisionLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def record(self, ctx: RequestContext, decision: Decision | None, elapsed: float) -> None:
        line: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "event": "decision",
            "method": ctx.method,
            "host": ctx.host,
            "path": ctx.path.split("?", 1)[0],
            "latency_us": int(elapsed * 1_000_000),
            "transport": ctx.transport,
        }
        if decision is None:
            line.update(decision="deny", reason="internal_error", status=500)
        else:
            line.update(
                decision_id=decision.decision_id,
                decision="allow" if decision.allow else "deny",
                status=decision.status,
                reason=decision.reason.value,
                rule=decision.rule_id,
                policy=decision.policy,
                policy_version=decision.policy_version,
            )
            if decision.principal is not None:
                line.update(issuer=decision.principal.issuer, subject=decision.principal.subject)
        self._stream.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._stream.flush()
