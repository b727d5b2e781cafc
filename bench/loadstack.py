"""Every process of the load scenarios, on loopback, started and stopped as one group.

Built from the dev tooling the demo and the integration tests use (app/dev/procs.py for the
supervision, app/dev/stack.py for the ztauthz configuration and commands, app/dev/envoy.py
for the shipped Envoy bootstraps): the dev issuer, the bare endpoint (scenario 1, and the
upstream of every Envoy), ztauthz serving HTTP ext_authz, ztauthz serving gRPC ext_authz, the
HTTP one again without allow lines in its decision log (scenario 2i), an Envoy answering 200
itself (the authorization service of scenario 6n), and six Envoys (no authorization,
jwt_authn + rbac, ext_authz over HTTP, over gRPC, over HTTP to the bare endpoint and over HTTP
to the answering Envoy: the two ceilings of an HTTP authorization service).

The ztauthz processes run the configuration a deployment would: decision log on (to their
log file), metrics on, traces off (no OTEL_* endpoint), one worker each; only the third
samples its allow lines out, to show what the decision log costs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.dev.envoy import Transport, envoy_command, transport_env
from app.dev.keys import DevKeys
from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import ztauthz_command
from app.dev.stack_config import AUDIENCE, LOOPBACK, Ports, bind_config
from bench import envoy_configs

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Ztauthz:
    """One ``ztauthz serve``: its check port (HTTP or gRPC) and admin port."""

    process: ManagedProcess
    check_port: int
    admin_port: int

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"


@dataclass(frozen=True, slots=True)
class LoadStack:
    workdir: Path
    keys: DevKeys
    issuer_url: str
    bare_port: int
    http: Ztauthz
    grpc: Ztauthz
    http_no_allow_lines: Ztauthz  # allow lines sampled out: what the decision log costs (2i)
    envoy_ports: Mapping[str, int]  # variant -> listener port

    def url(self, port: int, path: str) -> str:
        return f"http://{LOOPBACK}:{port}{path}"


def _process(
    name: str, argv: list[str], workdir: Path, ready: str, env: Mapping[str, str]
) -> ManagedProcess:
    return ManagedProcess(
        name,
        argv,
        log_path=workdir / "logs" / f"{name}.log",
        ready=HttpReady(ready),
        env=env,
        cwd=REPO,
        ready_timeout=60.0,
    )


def bare_process(workdir: Path, port: int, env: Mapping[str, str]) -> ManagedProcess:
    """uvicorn exactly as ztauthz serves: uvloop, httptools, no access log, one process."""
    argv = [sys.executable, "-m", "uvicorn", "bench.bare:app", "--host", LOOPBACK]
    argv += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    argv += ["--no-access-log", "--log-level", "warning", "--no-proxy-headers"]
    return _process("bare", argv, workdir, f"http://{LOOPBACK}:{port}/", env)


def bench_config() -> dict[str, Any]:
    """What the benchmark's ztauthz runs: the dev issuer (RS256 and ES256, as the demo), the
    defaults for everything else (token cache of 10,000, decision log on, metrics on), and no
    evidence sources: the benchmark policy has no device or location condition."""
    return {
        "issuers": [
            {
                "issuer": "http://127.0.0.1:9400",  # bind_config sets the real URL
                "discovery": True,
                "audiences": [AUDIENCE],
                "algorithms": ["RS256", "ES256"],
                "max_token_lifetime": "15m",
                "leeway": "30s",
            }
        ],
        "log_level": "info",
    }


# What the decision log costs, shown beside scenario 2: the same ztauthz writing no allow
# lines (denials would still be written). Not a configuration any target is measured with.
NO_ALLOW_LINES: Mapping[str, Any] = {"telemetry": {"decision_log": {"allow_sample_rate": 0.0}}}


def ztauthz_config(
    workdir: Path,
    name: str,
    *,
    issuer_url: str,
    policies: Path,
    check_port: int,
    admin_port: int,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """``bench_config()`` bound to these ports, issuer and policies."""
    ports = Ports(check=check_port, admin=admin_port)
    config = bind_config(bench_config(), ports=ports, issuer_url=issuer_url, policies=policies)
    config.update(extra or {})
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def ztauthz_process(
    workdir: Path,
    name: str,
    config: Path,
    admin_port: int,
    env: Mapping[str, str],
) -> ManagedProcess:
    argv = [*ztauthz_command(), "serve", "--config", str(config)]
    return _process(name, argv, workdir, f"http://{LOOPBACK}:{admin_port}/readyz", env)


def child_env() -> dict[str, str]:
    """This environment without ZTAUTHZ_* or OTEL_* settings: what is measured is the
    configuration written here (traces off), whatever the shell says."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("ZTAUTHZ_", "OTEL_"))}
    return {**keep, "PYTHONUNBUFFERED": "1"}


def start_load_stack(group: ProcessGroup, workdir: Path, policies: Path) -> LoadStack:
    """Start every process of the load scenarios in ``group``; return once all are ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = child_env()
    keys_dir = workdir / "keys"
    keys = DevKeys.load_or_create(keys_dir)
    issuer_port, bare_port = free_port(), free_port()
    issuer_url = f"http://{LOOPBACK}:{issuer_port}"
    issuer_argv = [*ztauthz_command(), "dev", "issuer", "--keys", str(keys_dir)]
    issuer_argv += ["--host", LOOPBACK, "--port", str(issuer_port)]
    issuer = _process(
        "issuer", issuer_argv, workdir, f"{issuer_url}/.well-known/openid-configuration", env
    )
    answer_port, answer_admin = free_port(), free_port()
    answer_config = envoy_configs.write_yaml(
        workdir / "envoy-answer.yaml",
        "An Envoy answering 200 to everything: scenario 6n's authorization service",
        envoy_configs.answering_config(listen_port=answer_port, admin_port=answer_admin),
    )
    answering = _process(
        "envoy-answer",
        envoy_command(answer_config),
        workdir,
        f"http://{LOOPBACK}:{answer_admin}/ready",
        env,
    )
    group.start(issuer, bare_process(workdir, bare_port, env), answering)

    servers: dict[str, Ztauthz] = {}
    checkers: tuple[tuple[str, Transport, Mapping[str, Any] | None], ...] = (
        ("http", "http", None),
        ("grpc", "grpc", None),
        ("http-no-allow-lines", "http", NO_ALLOW_LINES),
    )
    for key, transport, extra in checkers:
        check_port, admin_port = free_port(), free_port()
        name = f"ztauthz-{key}"
        config = ztauthz_config(
            workdir,
            name,
            issuer_url=issuer_url,
            policies=policies,
            check_port=check_port,
            admin_port=admin_port,
            extra=extra,
        )
        transport_vars = transport_env(transport, check_port)
        process = ztauthz_process(workdir, name, config, admin_port, {**env, **transport_vars})
        servers[key] = Ztauthz(process, check_port, admin_port)

    envoy_ports: dict[str, int] = {}
    envoys: list[ManagedProcess] = []
    variants: tuple[envoy_configs.Variant, ...] = (
        "none",
        "native",
        "http",
        "grpc",
        "http-bare",
        "http-envoy",
    )
    for variant in variants:
        listen, admin = free_port(), free_port()
        if variant == "http-bare":
            authz = bare_port
        elif variant == "http-envoy":
            authz = answer_port
        else:
            authz = servers["grpc" if variant == "grpc" else "http"].check_port
        path = envoy_configs.write_scenario_config(
            workdir / f"envoy-{variant}.yaml",
            variant,
            listen_port=listen,
            admin_port=admin,
            upstream_port=bare_port,
            authz_port=authz,
            issuer=issuer_url,
            audience=AUDIENCE,
            jwks=keys.jwks(),
        )
        envoys.append(
            _process(
                f"envoy-{variant}",
                envoy_command(path),
                workdir,
                f"http://{LOOPBACK}:{admin}/ready",
                env,
            )
        )
        envoy_ports[variant] = listen
    group.start(*(server.process for server in servers.values()), *envoys)
    return LoadStack(
        workdir=workdir,
        keys=keys,
        issuer_url=issuer_url,
        bare_port=bare_port,
        http=servers["http"],
        grpc=servers["grpc"],
        http_no_allow_lines=servers["http-no-allow-lines"],
        envoy_ports=envoy_ports,
    )


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(processes: Sequence[ManagedProcess]) -> dict[str, float]:
    """User + system CPU seconds each running process (all its threads) has spent so far, by
    name (Linux /proc)."""
    spent: dict[str, float] = {}
    for process in processes:
        if process.pid is None:
            continue
        try:
            stat = Path(f"/proc/{process.pid}/stat").read_text(encoding="ascii")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        spent[process.name] = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    return spent


def resident_kib(pid: int) -> int:
    """VmRSS of a process, in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
