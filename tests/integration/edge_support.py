"""Edges: the Envoys users run in front of ztauthz (conftest.py's ``edge`` and ``edges``)."""

from __future__ import annotations

from dataclasses import dataclass

from app.dev.envoy import Transport
from app.dev.stack import Stack


@dataclass(frozen=True, slots=True)
class Edge:
    """One Envoy in front of ztauthz: which bootstrap, which transport, and its port."""

    bootstrap: str
    transport: Transport
    stack: Stack
    port: int

    @property
    def name(self) -> str:
        return f"{self.bootstrap}-{self.transport}"
