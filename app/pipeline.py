"""authorize(ctx, state, now) -> Decision: the one straight path every check takes.

Each step is a function of typed, frozen values. Any unexpected exception becomes a deny with
``internal_error``: ztauthz fails closed.
"""

from __future__ import annotations

import dataclasses
import logging

from app.decision import Decision, DpopChallenge
from app.evidence.model import Evidence
from app.identity.dpop import CHALLENGE_ERRORS
from app.identity.errors import TokenError
from app.identity.extract import extract_credential
from app.identity.principal import Principal
from app.policy.decide import policy_decision
from app.policy.evaluate import with_evidence
from app.policy.request import Unmatchable, policy_input
from app.reasons import Reason
from app.request import RequestContext
from app.state import RuntimeState
from app.telemetry.tracing import (
    EVALUATE_SPAN,
    EVIDENCE_SPAN,
    INTROSPECT_SPAN,
    NO_STEPS,
    SIGNALS_SPAN,
    VERIFY_SPAN,
    Steps,
)

log = logging.getLogger("ztauthz.pipeline")


def dpop_challenge(state: RuntimeState, reason: Reason, now: float) -> DpopChallenge | None:
    """The DPoP challenge's parameters for a refusal that answers with one (RFC 9449 §7.1)."""
    if reason not in CHALLENGE_ERRORS:
        return None
    binding = state.binding
    return DpopChallenge(binding.algorithms, binding.nonce(now))


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
    token: str | None = None
    try:
        try:
            request = policy_input(ctx.method, ctx.host, ctx.path, ctx.headers)
        except Unmatchable as exc:  # decided and logged like any denial, over HTTP and gRPC
            return Decision(False, exc.reason, decision_id, version)
        with steps.span(VERIFY_SPAN) as span:
            try:
                credential = extract_credential(ctx.headers, state.settings.token.cookie)
                if credential is not None:
                    token = credential.token
                    verified = await state.verifier.verify(token, now)
                    # A token bound to a key or certificate (cnf) only from its holder.
                    await state.binding.enforce(ctx, credential, verified.claims, now)
                    principal = verified
            except TokenError as exc:
                # An invalid token is refused even on anonymous routes: presenting bad
                # credentials is never silently downgraded to "no credentials".
                span.set_attribute("ztauthz.reason", exc.reason.value)
                log.info("token refused: %s", exc.reason.value)
                return Decision(
                    False,
                    exc.reason,
                    decision_id,
                    version,
                    dpop=dpop_challenge(state, exc.reason, now),
                )
        evidence: Evidence | None = None
        if state.evidence is not None:  # only when some evidence source is configured
            with steps.span(EVIDENCE_SPAN):
                evidence = await state.evidence.gather(ctx, principal, now)
                request = with_evidence(request, evidence, now)
        # What security events and operators said since (app/signals/view.py): before any
        # remembered decision, on every check. An empty view costs one truth test.
        revocations = state.revocations
        signalled = False
        if revocations:
            with steps.span(SIGNALS_SPAN) as span:
                device = None if evidence is None or evidence.device is None else evidence.device
                if principal is not None:
                    said = revocations.check_principal(
                        principal, now, None if device is None else device.id
                    )
                    if said.refusal is not None:
                        span.set_attribute("ztauthz.reason", said.refusal.value)
                        return Decision(
                            False, said.refusal, decision_id, version, principal=principal
                        )
                    if said.principal is not None:
                        principal, signalled = said.principal, True
                        request = dataclasses.replace(request, signals=said.variables)
                if device is not None:
                    refused = revocations.check_device(device.id, principal, now)
                    if refused is not None:
                        span.set_attribute("ztauthz.reason", refused[0].value)
                        return Decision(
                            False,
                            refused[0],
                            decision_id,
                            version,
                            principal=principal,
                            evidence=evidence,
                        )
        # Plain rules decide the same for the same principal and request line (the memo's
        # module says when); shadow policies, evidence and signals make every check its own.
        remember = (
            principal is not None and evidence is None and state.candidate is None and not signalled
        )
        with steps.span(EVALUATE_SPAN):
            if remember:
                assert principal is not None
                known = state.memo.get(principal, state.policies, request, decision_id)
                if known is not None:
                    if known.allow and known.rule_id in state.policies.high_risk:
                        return await _confirmed(known, token, state, now, steps)
                    return known
            decision = policy_decision(
                state.policies, state.candidate, request, principal, now, decision_id, evidence
            )
        if decision.reason in CHALLENGE_ERRORS:  # a rule's sender_constrained: a DPoP challenge
            decision = dataclasses.replace(
                decision, dpop=dpop_challenge(state, decision.reason, now)
            )
        if remember:
            state.memo.put(state.policies, request, decision)
        if decision.allow and decision.rule_id in state.policies.high_risk:
            return await _confirmed(decision, token, state, now, steps)
        return decision
    except Exception:
        log.exception("check failed; denying (decision_id=%s)", decision_id)
        return Decision(False, Reason.INTERNAL_ERROR, decision_id, version, principal=principal)


async def _confirmed(
    decision: Decision, token: str | None, state: RuntimeState, now: float, steps: Steps
) -> Decision:
    """``decision``, an allow by a ``high_risk`` rule, once the token's issuer confirmed the
    token active by introspection (docs/introspection.md); else the refusal that says why."""
    principal = decision.principal
    with steps.span(INTROSPECT_SPAN) as span:
        try:
            if token is None or principal is None:  # e.g. a workload rule, allowed without one
                raise TokenError(Reason.INTROSPECTION_REQUIRED, "no token to confirm")
            await state.verifier.confirm(token, principal, now)
        except TokenError as exc:
            span.set_attribute("ztauthz.reason", exc.reason.value)
            log.info(
                "high-risk rule %s: token not confirmed: %s", decision.rule_id, exc.reason.value
            )
            return dataclasses.replace(decision, allow=False, reason=exc.reason)
    return decision
