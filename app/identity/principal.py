"""Principal: a verified identity, the only thing policies learn about a token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Principal:
    issuer: str
    subject: str
    groups: frozenset[str]
    scopes: frozenset[str]
    audience: tuple[str, ...]
    expires_at: int
    issued_at: int
    claims: Mapping[str, Any]  # read-only view of the verified payload
    token_id: str | None = None
    client_id: str | None = None
    # Authentication strength (OIDC Core §2): context class, methods, and when the user
    # authenticated (epoch seconds). Policies with ``auth:`` conditions read them (step-up).
    acr: str | None = None
    amr: frozenset[str] = frozenset()
    auth_time: int | None = None
