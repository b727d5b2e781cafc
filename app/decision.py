"""Decision: the outcome of one check, independent of the transport that renders it."""

from __future__ import annotations

from dataclasses import dataclass

from app.identity.principal import Principal
from app.reasons import Reason, status_of


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: Reason
    decision_id: str
    policy_version: str
    rule_id: str | None = None
    policy: str | None = None
    principal: Principal | None = None

    @property
    def status(self) -> int:
        return status_of(self.reason)
