"""The real stack, once per session and transport: dev issuer, echo upstream, ``ztauthz serve``
and Envoy running the shipped bootstrap (only re-ported), all on ephemeral loopback ports.

Two stacks run side by side: ``http`` (deploy/envoy/envoy.yaml, HTTP ext_authz) and ``grpc``
(deploy/envoy/envoy-grpc.yaml, gRPC ext_authz; see transport_support.py). The session-scoped
``transport`` fixture is parametrized over both, so every test that uses ``stack`` runs once per
transport with the same expectations; ``http_stack`` and ``grpc_stack`` give both at once.

Everything is started through app/dev/stack.py, exactly as ``ztauthz dev stack`` does, and is
always stopped when the session ends (or fails to start). Process logs are kept under the
session's tmp directory and printed by the failure messages.

``edge`` adds the other way users run Envoy: a minimal bootstrap that does no normalization of
its own (envoy/envoy-minimal*.yaml), one more Envoy in front of each transport's ztauthz, so a
test using ``edge`` runs four times: {shipped, minimal} x {http, grpc}.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from app.dev.envoy import (
    TRANSPORTS,
    Transport,
    envoy_command,
    shipped_envoy_config,
    transport_env,
    write_envoy_config,
)
from app.dev.keys import DevKeys
from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import Stack, start_stack
from app.dev.stack_config import Ports
from app.dev.tokens import mint
from tests.integration.edge_support import Edge
from tests.integration.redis_support import RedisServer, start_redis

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "ztauthz.yaml"
POLICIES = HERE / "policies"
MINIMAL_ENVOY = {
    "http": HERE / "envoy" / "envoy-minimal.yaml",
    "grpc": HERE / "envoy" / "envoy-minimal-grpc.yaml",
}
BOOTSTRAPS = ("shipped", "minimal")


@pytest.fixture(scope="session")
def child_env() -> dict[str, str]:
    """The environment without ZTAUTHZ_* overrides, so a developer's shell cannot skew tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ZTAUTHZ_")}


def _run_stack(
    transport: Transport, tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str]
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp(f"stack-{transport}")
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    ports = Ports.ephemeral()
    with ProcessGroup() as group:
        yield start_stack(
            group,
            workdir=workdir,
            ports=ports,
            policies=POLICIES,
            config=config,
            envoy_template=shipped_envoy_config(transport),
            env={**child_env, **transport_env(transport, ports.check)},
        )


@pytest.fixture(scope="session")
def http_stack(
    tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str]
) -> Iterator[Stack]:
    yield from _run_stack("http", tmp_path_factory, child_env)


@pytest.fixture(scope="session")
def grpc_stack(
    tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str]
) -> Iterator[Stack]:
    yield from _run_stack("grpc", tmp_path_factory, child_env)


@pytest.fixture(scope="session", params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> Transport:
    """How Envoy asks ztauthz: every test using ``stack`` runs once per transport."""
    value: Transport = request.param
    return value


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, transport: Transport) -> Stack:
    """The running stack for ``transport``; ``stack.ports.check`` is its ztauthz check port."""
    running: Stack = request.getfixturevalue(f"{transport}_stack")
    return running


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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server on a loopback port for one test (stopped after it)."""
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.process.stop()


def _minimal_envoy(stack: Stack, transport: Transport) -> Iterator[int]:
    """An Envoy running the minimal bootstrap in front of ``stack``'s ztauthz and upstream."""
    port, admin = free_port(), free_port()
    config = write_envoy_config(
        stack.workdir / "envoy-minimal.yaml",
        template=MINIMAL_ENVOY[transport],
        listen_port=port,
        admin_port=admin,
        authz_port=stack.ports.check,
        upstream_port=stack.ports.upstream,
    )
    with ProcessGroup() as group:
        group.start(
            ManagedProcess(
                "envoy-minimal",
                envoy_command(config),
                log_path=stack.log("envoy-minimal"),
                ready=HttpReady(f"http://127.0.0.1:{admin}/ready"),
            )
        )
        yield port


@pytest.fixture(scope="session")
def http_minimal_envoy(http_stack: Stack) -> Iterator[int]:
    yield from _minimal_envoy(http_stack, "http")


@pytest.fixture(scope="session")
def grpc_minimal_envoy(grpc_stack: Stack) -> Iterator[int]:
    yield from _minimal_envoy(grpc_stack, "grpc")


EDGES = [(bootstrap, transport) for bootstrap in BOOTSTRAPS for transport in TRANSPORTS]


@pytest.fixture(scope="session", params=EDGES, ids=[f"{b}-{t}" for b, t in EDGES])
def edge(request: pytest.FixtureRequest) -> Edge:
    """Each Envoy users run in front of ztauthz: shipped and minimal, over HTTP and gRPC."""
    bootstrap, transport = request.param
    stack: Stack = request.getfixturevalue(f"{transport}_stack")
    port = stack.ports.envoy
    if bootstrap == "minimal":
        port = request.getfixturevalue(f"{transport}_minimal_envoy")
    return Edge(bootstrap, transport, stack, port)


@pytest.fixture(scope="session")
def edges(request: pytest.FixtureRequest) -> list[Edge]:
    """All four edges at once (for tests that spread one corpus over them)."""
    found = []
    for bootstrap, transport in EDGES:
        stack: Stack = request.getfixturevalue(f"{transport}_stack")
        port = stack.ports.envoy
        if bootstrap == "minimal":
            port = request.getfixturevalue(f"{transport}_minimal_envoy")
        found.append(Edge(bootstrap, transport, stack, port))
    return found
