"""authorize(ctx, state, now) -> Decision: the one straight path every check takes.

Each step is a function of typed, frozen values. Any unexpected exception becomes a deny with
``internal_error``: ztauthz fails closed.
"""

from __future__ import annotations

import logging

from app.decision import Decision
from app.evidence.model import Evidence
from app.identity.errors import TokenError
from app.identity.extract import extract_token
from app.identity.principal import Principal
from app.policy.decide import policy_decision
from app.policy.evaluate import PolicyInput, with_evidence
from app.policy.normalize import PathRejected, normalize_host, normalize_path
from app.reasons import Reason
from app.request import RequestContext
from app.state import RuntimeState
from app.telemetry.tracing import EVALUATE_SPAN, EVIDENCE_SPAN, NO_STEPS, VERIFY_SPAN, Steps

log = logging.getLogger("ztauthz.pipeline")


async def authorize(
    ctx: RequestContext,
    state: RuntimeState,
    now: float,
    decision_id: str,
    steps: Steps = NO_STEPS,
) -> Decision:
    """Decide one request. Never raises. ``steps`` opens a child span per step (tracing)."""
    version = state.policies.version
    principal: Principal | None = None
    try:
        try:
            request = PolicyInput(
                method=ctx.method,
                host=normalize_host(ctx.host),
                path=normalize_path(ctx.path),
                headers=ctx.headers,
            )
        except (PathRejected, ValueError):
            return Decision(False, Reason.PATH_REJECTED, decision_id, version)
        with steps.span(VERIFY_SPAN) as span:
            try:
                token = extract_token(ctx.headers, state.settings.token.cookie)
                if token is not None:
                    principal = await state.verifier.verify(token, now)
            except TokenError as exc:
                # An invalid token is refused even on anonymous routes: presenting bad
                # credentials is never silently downgraded to "no credentials".
                span.set_attribute("ztauthz.reason", exc.reason.value)
                log.info("token refused: %s", exc.reason.value)
                return Decision(False, exc.reason, decision_id, version)
        evidence: Evidence | None = None
        if state.evidence is not None:  # only when some evidence source is configured
            with steps.span(EVIDENCE_SPAN):
                evidence = await state.evidence.gather(ctx, principal, now)
                request = with_evidence(request, evidence, now)
        # Plain rules decide the same for the same principal and request line (the memo's
        # module says when); shadow policies and evidence make every check its own.
        remember = principal is not None and evidence is None and state.candidate is None
        with steps.span(EVALUATE_SPAN):
            if remember:
                assert principal is not None
                known = state.memo.get(principal, state.policies, request, decision_id)
                if known is not None:
                    return known
            decision = policy_decision(
                state.policies, state.candidate, request, principal, now, decision_id, evidence
            )
        if remember:
            state.memo.put(state.policies, request, decision)
        return decision
    except Exception:
        log.exception("check failed; denying (decision_id=%s)", decision_id)
        return Decision(False, Reason.INTERNAL_ERROR, decision_id, version, principal=principal)
