"""A fleet of ztauthz replicas for the continuous-access-evaluation tests: one dev issuer (also
the dev SSF transmitter, app/dev/issuer.py), one echo upstream, and per replica ``ztauthz
serve`` (its own SSF receiver listener and admin listener) behind its own Envoy running the
shipped bootstrap, all on ephemeral loopback ports; the replicas share one store (Redis when
given, else each its own memory store).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from app.dev.envoy import envoy_command, write_envoy_config
from app.dev.keys import DevKeys
from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import ztauthz_command
from app.dev.stack_config import LOOPBACK
from app.dev.tokens import mint

AUDIENCE = "https://api.example.com"
RECEIVER_AUDIENCE = "urn:ztauthz:ssf-receiver"
STREAM = "idp"
HERE = Path(__file__).resolve().parent
POLICIES = HERE / "policies"
# One client, kept: a new httpx client per request builds an SSL context each time (tens of
# milliseconds on a loaded machine), which would blur what the propagation test measures.
CLIENT = httpx.Client(timeout=10, trust_env=False)


@dataclass(frozen=True)
class Replica:
    index: int
    envoy_port: int
    admin_port: int
    receiver_port: int
    config_path: Path

    @property
    def push_url(self) -> str:
        return f"http://{LOOPBACK}:{self.receiver_port}/ssf/{STREAM}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    def get(self, path: str, token: str | None, **headers: str) -> httpx.Response:
        sent = dict(headers)
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        return CLIENT.get(f"http://{LOOPBACK}:{self.envoy_port}{path}", headers=sent)

    def readyz(self) -> httpx.Response:
        return CLIENT.get(self.admin_url + "/readyz")


@dataclass(frozen=True)
class Fleet:
    workdir: Path
    keys: DevKeys
    issuer_url: str
    push_token: str
    admin_token_file: Path
    replicas: tuple[Replica, ...]
    processes: Mapping[str, ManagedProcess]

    def token(self, subject: str = "alice", **claims: Any) -> str:
        return mint(
            self.keys,
            issuer=self.issuer_url,
            audience=AUDIENCE,
            subject=subject,
            groups=["finance"],
            scopes=["invoices:read"],
            extra_claims=claims,
        )

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{p.log_tail(30)}" for name, p in self.processes.items())


def fleet_config(
    issuer_url: str,
    replica: int,
    ports: Mapping[str, int],
    push_token_file: Path,
    admin_token_file: Path,
    store: Mapping[str, Any] | None,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {
            "check": {"host": LOOPBACK, "port": ports["check"], "path_prefix": "/check"},
            "admin": {"host": LOOPBACK, "port": ports["admin"]},
        },
        "issuers": [
            {
                "issuer": issuer_url,
                "discovery": True,
                "audiences": [AUDIENCE],
                "algorithms": ["RS256", "ES256"],
                "max_token_lifetime": "15m",
                "leeway": "30s",
            }
        ],
        "policies": str(POLICIES),
        "evidence": {
            "token_claims": [{"issuer": issuer_url, "device": {"id": "device_id"}}],
        },
        "signals": {
            "receiver": {"listener": "own", "host": LOOPBACK, "port": ports["receiver"]},
            "transmitters": [
                {
                    "name": STREAM,
                    "issuer": issuer_url,
                    "audiences": [RECEIVER_AUDIENCE],
                    "push": {"token_file": str(push_token_file)},
                }
            ],
            "admin": {"token_file": str(admin_token_file)},
            "store_grace": "3s",
            "resync_interval": "5s",
        },
        "log_level": "info",
    }
    if store is not None:
        config["store"] = dict(store)
    return config


def start_fleet(
    group: ProcessGroup,
    workdir: Path,
    env: Mapping[str, str],
    *,
    replicas: int = 1,
    store: Mapping[str, Any] | None = None,
    configure: Callable[[dict[str, Any]], None] | None = None,
) -> Fleet:
    workdir.mkdir(parents=True, exist_ok=True)
    keys_dir = workdir / "keys"
    keys = DevKeys.load_or_create(keys_dir)
    issuer_port, upstream_port = free_port(), free_port()
    issuer_url = f"http://{LOOPBACK}:{issuer_port}"
    push_token = secrets.token_urlsafe(24)
    push_token_file = workdir / "push-token"
    push_token_file.write_text(push_token + "\n", encoding="utf-8")
    admin_token_file = workdir / "admin-token"
    admin_token_file.write_text(secrets.token_urlsafe(24) + "\n", encoding="utf-8")
    child_env = {**env, "PYTHONUNBUFFERED": "1"}
    ztauthz = ztauthz_command()
    processes: dict[str, ManagedProcess] = {}

    def process(name: str, argv: list[str], ready: str) -> ManagedProcess:
        made = ManagedProcess(
            name,
            argv,
            log_path=workdir / "logs" / f"{name}.log",
            ready=HttpReady(ready),
            env=child_env,
            ready_timeout=40.0,
        )
        processes[name] = made
        return made

    issuer_argv = [*ztauthz, "dev", "issuer", "--keys", str(keys_dir), "--host", LOOPBACK]
    issuer_argv += ["--port", str(issuer_port)]
    issuer = process(
        "issuer",
        issuer_argv,
        f"{issuer_url}/.well-known/openid-configuration",
    )
    upstream = process(
        "upstream",
        [*ztauthz, "dev", "upstream", "--host", LOOPBACK, "--port", str(upstream_port)],
        f"http://{LOOPBACK}:{upstream_port}/",
    )
    group.start(issuer, upstream)
    members: list[Replica] = []
    serving: list[ManagedProcess] = []
    for index in range(replicas):
        ports = {
            name: free_port() for name in ("check", "admin", "receiver", "envoy", "envoy_admin")
        }
        config = fleet_config(issuer_url, index, ports, push_token_file, admin_token_file, store)
        if configure is not None:
            configure(config)
        config_path = workdir / f"ztauthz-{index}.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        envoy_config = write_envoy_config(
            workdir / f"envoy-{index}.yaml",
            listen_port=ports["envoy"],
            admin_port=ports["envoy_admin"],
            authz_port=ports["check"],
            upstream_port=upstream_port,
        )
        serving.append(
            process(
                f"envoy-{index}",
                envoy_command(envoy_config),
                f"http://{LOOPBACK}:{ports['envoy_admin']}/ready",
            )
        )
        serving.append(
            process(
                f"ztauthz-{index}",
                [*ztauthz, "serve", "--config", str(config_path)],
                f"http://{LOOPBACK}:{ports['admin']}/readyz",
            )
        )
        members.append(
            Replica(index, ports["envoy"], ports["admin"], ports["receiver"], config_path)
        )
    group.start(*serving)
    return Fleet(workdir, keys, issuer_url, push_token, admin_token_file, tuple(members), processes)


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.005) -> float | None:
    """Seconds until ``predicate()`` held, or None if it did not within ``timeout``."""
    started = time.perf_counter()
    while True:
        if predicate():
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            return None
        time.sleep(step)
