"""Fixtures for policy tests: compile YAML through the real loader, build principals."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Mapping
from itertools import count
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from app.identity.principal import Principal
from app.policy.index import CompiledPolicies
from app.policy.loader import load_policy_dir


@pytest.fixture
def compile_policies(tmp_path: Path) -> Callable[..., CompiledPolicies]:
    """Write each YAML text to its own file (in that order) and load the directory."""
    dirs = count()

    def make(*texts: str) -> CompiledPolicies:
        root = tmp_path / f"policies{next(dirs)}"
        root.mkdir()
        for position, text in enumerate(texts):
            (root / f"{position:02d}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
        return load_policy_dir(root)

    return make


@pytest.fixture
def principal() -> Callable[..., Principal]:
    def make(
        *,
        issuer: str = "https://idp.example.com",
        subject: str = "alice",
        groups: Iterable[str] = (),
        scopes: Iterable[str] = (),
        claims: Mapping[str, Any] | None = None,
        acr: str | None = None,
        amr: Iterable[str] = (),
        auth_time: int | None = None,
    ) -> Principal:
        return Principal(
            issuer=issuer,
            subject=subject,
            groups=frozenset(groups),
            scopes=frozenset(scopes),
            audience=("https://api.example.com",),
            expires_at=2_000_000_600,
            issued_at=2_000_000_000,
            claims=MappingProxyType(dict(claims or {})),
            acr=acr,
            amr=frozenset(amr),
            auth_time=auth_time,
        )

    return make
