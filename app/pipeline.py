"""authorize(ctx, state, now) -> Decision: the one straight path every check takes.

Each step is a function of typed, frozen values. Any unexpected exception becomes a deny with
``internal_error``: ztauthz fails closed.
"""

from __future__ import annotations

import logging
import os
from collections import deque

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


# A random (version 4, RFC 9562 variant) UUID's bits, without building a uuid.UUID.
_UUID4_KEEP = ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)
_IDS_PER_READ = 256
# Ready decision ids. os.urandom is read 4 KiB at a time: a read per check releases the GIL,
# and getting it back behind the decision-log writer cost more than the id itself.
_ids: deque[str] = deque()
os.register_at_fork(after_in_child=_ids.clear)  # a forked worker never repeats its parent's


def new_decision_id() -> str:
    """A random UUID4 in 32 hex digits, as ``uuid.uuid4().hex`` (from the same source)."""
    try:
        return _ids.popleft()  # atomic: no two callers get the same id
    except IndexError:
        pool = os.urandom(16 * _IDS_PER_READ)
        fresh = [
            f"{int.from_bytes(pool[at : at + 16]) & _UUID4_KEEP | _UUID4_SET:032x}"
            for at in range(0, len(pool), 16)
        ]
        _ids.extend(fresh[1:])
        return fresh[0]


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
        except PathRejected as exc:
            return Decision(False, exc.reason, decision_id, version)
        except ValueError:  # the host
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
