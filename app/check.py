"""One check, end to end, for every transport: the pipeline plus its telemetry.

Transports build a RequestContext, call ``Checker.check`` and render the Decision. Telemetry is
written in a ``finally``, so no decision goes unrecorded, whichever transport asked.
"""

from __future__ import annotations

import time

from app.decision import Decision
from app.pipeline import authorize, new_decision_id
from app.request import RequestContext
from app.state import Runtime
from app.telemetry.decision_log import DecisionLog


class Checker:
    def __init__(self, runtime: Runtime, decision_log: DecisionLog) -> None:
        self._runtime = runtime
        self._log = decision_log

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    async def check(self, ctx: RequestContext) -> Decision:
        """Decide ``ctx`` with the current state; never raises (the pipeline fails closed)."""
        started = time.perf_counter()
        decision: Decision | None = None
        try:
            decision = await authorize(
                ctx, self._runtime.state, self._runtime.now(), new_decision_id()
            )
            return decision
        finally:
            self._log.record(ctx, decision, time.perf_counter() - started)
