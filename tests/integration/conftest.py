"""The real stack, once per session: dev issuer, echo upstream, ``ztauthz serve`` and Envoy
running the shipped deploy/envoy/envoy.yaml (only re-ported), all on ephemeral loopback ports.

Everything is started through app/dev/stack.py, exactly as ``ztauthz dev stack`` does, and is
always stopped when the session ends (or fails to start). Process logs are kept under the
session's tmp directory and printed by the failure messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from app.dev.keys import DevKeys
from app.dev.procs import ProcessGroup
from app.dev.stack import Ports, Stack, start_stack
from app.dev.tokens import mint

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "ztauthz.yaml"
POLICIES = HERE / "policies"


@pytest.fixture(scope="session")
def child_env() -> dict[str, str]:
    """The environment without ZTAUTHZ_* overrides, so a developer's shell cannot skew tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ZTAUTHZ_")}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str]) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    with ProcessGroup() as group:
        yield start_stack(
            group,
            workdir=workdir,
            ports=Ports.ephemeral(),
            policies=POLICIES,
            config=config,
            env=child_env,
        )


@pytest.fixture(scope="session")
def token(stack: Stack) -> Callable[..., str]:
    """Mint a token from the stack's dev issuer; keyword arguments as ``app.dev.tokens.mint``."""

    def make(**overrides: object) -> str:
        kwargs: dict[str, object] = {
            "issuer": stack.issuer_url,
            "audience": stack.audience,
            "subject": "alice",
            "groups": ["finance"],
            "scopes": ["invoices:read"],
        }
        kwargs.update(overrides)
        return mint(stack.keys, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def untrusted_keys() -> DevKeys:
    """Keys of an issuer ztauthz is not configured to trust."""
    return DevKeys.generate()
