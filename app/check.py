"""One check, end to end, for every transport: the pipeline plus its telemetry.

Transports build a RequestContext, call ``Checker.check`` and render the Decision. Telemetry
(the ``ztauthz.check`` span, one decision-log line, the counters) is written in a ``finally``,
so no decision goes unrecorded, whichever transport asked.
"""

from __future__ import annotations

import logging
import time

from app.decision import Decision
from app.decision_id import new_decision_id
from app.pipeline import authorize
from app.reasons import Reason
from app.request import RequestContext
from app.state import Runtime
from app.telemetry.decision_log import DecisionLog

log = logging.getLogger("ztauthz.check")


class Checker:
    def __init__(self, runtime: Runtime, decision_log: DecisionLog | None = None) -> None:
        """``decision_log`` replaces the runtime's own for this checker's lines (tests)."""
        self._runtime = runtime
        self._telemetry = runtime.telemetry
        self._log = decision_log if decision_log is not None else runtime.telemetry.decision_log

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    async def check(self, ctx: RequestContext) -> Decision:
        """Decide ``ctx`` with the current state; never raises (the pipeline fails closed)."""
        started = time.perf_counter()
        now = self._runtime.now()
        decision_id = new_decision_id()
        telemetry = self._telemetry
        scope = telemetry.begin_check(ctx, decision_id)
        decision: Decision | None = None
        try:
            decision = await authorize(
                ctx, self._runtime.state, now, decision_id, telemetry.tracing.steps
            )
            assertions = self._runtime.assertions
            if decision.allow and assertions is not None:
                decision = self._with_assertion(decision, ctx, now)
            return decision
        finally:
            elapsed = time.perf_counter() - started
            telemetry.end_check(scope, ctx, decision, elapsed, now, self._log)

    def _with_assertion(self, decision: Decision, ctx: RequestContext, now: float) -> Decision:
        """The allow with its signed assertion; a deny (``internal_error``) when it cannot be
        signed: an upstream that relies on the assertion must never see an allow without it."""
        assert self._runtime.assertions is not None
        try:
            return self._runtime.assertions.attach(decision, ctx, now)
        except Exception:
            log.exception("assertion not signed; denying (decision_id=%s)", decision.decision_id)
            return Decision(
                False,
                Reason.INTERNAL_ERROR,
                decision.decision_id,
                decision.policy_version,
                principal=decision.principal,
            )
