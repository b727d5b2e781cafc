"""The local stack's processes on loopback, started and stopped as one: the dev OIDC issuer, a
dev device-trust provider (a second issuer, for device attestation tokens), the echo upstream,
``ztauthz serve``, Envoy running the shipped bootstrap (deploy/envoy/envoy.yaml, only
re-ported) and a second Envoy with an mTLS listener (deploy/envoy/envoy-mtls.yaml, with a
generated dev CA and certificates), each waited for until ready.

Everything it writes goes to one directory (the dev state directory, app/dev/state.py: ``.dev/``
of the source checkout by default): the dev keys (shared with ``ztauthz dev token``), the
generated ztauthz and Envoy configurations, one log per process, and ``stack.json`` while it runs
(which issuers it serves, for ``dev token``). ``ztauthz dev stack`` (app/dev/demo.py) and the
integration tests start the same stack through ``start_stack``.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from app.dev.envoy import (
    SHIPPED_ENVOY_CONFIG,
    SHIPPED_ENVOY_MTLS_CONFIG,
    DownstreamTls,
    envoy_command,
    write_envoy_config,
)
from app.dev.keys import DevKeys
from app.dev.pki import DevPki, make_dev_pki
from app.dev.procs import HttpReady, ManagedProcess, ProcessError, ProcessGroup
from app.dev.stack_config import (
    ADMIN_TOKEN_FILE,
    AUDIENCE,
    DEV_STREAM,
    LOOPBACK,
    PUSH_TOKEN_FILE,
    SHIPPED_POLICIES,
    Ports,
    bind_config,
    demo_config,
)


@dataclass(frozen=True, slots=True)
class Stack:
    """A running stack: where everything listens and what it was started with."""

    ports: Ports
    workdir: Path
    keys: DevKeys
    issuer_url: str
    audience: str
    config_path: Path
    envoy_config_path: Path
    policies: Path
    pki: DevPki | None = None  # with the mTLS listener
    device_keys: DevKeys | None = None  # with the device provider
    device_issuer_url: str | None = None

    @property
    def envoy_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.envoy}"

    @property
    def envoy_mtls_url(self) -> str:
        return f"https://{LOOPBACK}:{self.ports.envoy_mtls}"

    @property
    def check_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.check}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.admin}"

    @property
    def receiver_url(self) -> str:
        """Where the dev transmitter pushes (the dev stream of the SSF receiver)."""
        return f"http://{LOOPBACK}:{self.ports.receiver}/ssf/{DEV_STREAM}"

    @property
    def upstream_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.upstream}"

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"


def ztauthz_command() -> list[str]:
    """How to run the ztauthz CLI: the console script beside this Python, else ``-m app.cli``."""
    script = Path(sys.executable).parent / "ztauthz"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "app.cli"]


def _secret_file(path: Path) -> None:
    """A random token in ``path`` (0600), kept when it exists."""
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24) + "\n", encoding="utf-8")
    path.chmod(0o600)


def _check_free(ports: Ports) -> None:
    for f in fields(ports):
        port = getattr(ports, f.name)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the servers do: a port held only by connections in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                flag = "--" + f.name.replace("_", "-") + "-port"
                raise ProcessError(
                    f"port {port} ({f.name}) is in use on {LOOPBACK}; choose another with {flag}"
                ) from None


def start_stack(
    group: ProcessGroup,
    *,
    workdir: Path,
    ports: Ports,
    policies: Path = SHIPPED_POLICIES,
    config: Mapping[str, Any] | None = None,
    envoy_template: Path = SHIPPED_ENVOY_CONFIG,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 30.0,
    mtls: bool = False,
    device_issuer: bool = False,
) -> Stack:
    """Start issuer, upstream, Envoy and ``ztauthz serve`` in ``group``; return once all are ready.

    ``mtls`` adds a second Envoy running envoy-mtls.yaml on ``ports.envoy_mtls`` with a dev PKI
    generated in ``workdir/pki``; ``device_issuer`` adds a dev device-trust provider (its own
    keys in ``workdir/device-keys``) on ``ports.device_issuer``. The caller's ``with group:``
    block stops them (also if this function fails half-way).
    """
    ports = ports.resolved()
    _check_free(ports)
    workdir.mkdir(parents=True, exist_ok=True)
    keys_dir = workdir / "keys"
    keys = DevKeys.load_or_create(keys_dir)
    issuer_url = f"http://{LOOPBACK}:{ports.issuer}"
    device_keys_dir = workdir / "device-keys"
    device_keys = DevKeys.load_or_create(device_keys_dir) if device_issuer else None
    device_issuer_url = f"http://{LOOPBACK}:{ports.device_issuer}" if device_issuer else None
    pki = make_dev_pki(workdir / "pki") if mtls else None
    config_path = workdir / "ztauthz.yaml"
    bound = bind_config(
        config or demo_config(),
        ports=ports,
        issuer_url=issuer_url,
        policies=policies,
        device_issuer_url=device_issuer_url,
        workdir=workdir,
    )
    for name in (PUSH_TOKEN_FILE, ADMIN_TOKEN_FILE):
        _secret_file(workdir / name)
    config_path.write_text(
        "# Generated by `ztauthz dev stack`; edit the source, not this file.\n"
        + yaml.safe_dump(bound, sort_keys=False),
        encoding="utf-8",
    )
    envoy_config = write_envoy_config(
        workdir / "envoy.yaml",
        template=envoy_template,
        listen_port=ports.envoy,
        admin_port=ports.envoy_admin,
        authz_port=ports.check,
        upstream_port=ports.upstream,
    )
    stack = Stack(
        ports=ports,
        workdir=workdir,
        keys=keys,
        issuer_url=issuer_url,
        audience=AUDIENCE,
        config_path=config_path,
        envoy_config_path=envoy_config,
        policies=policies,
        pki=pki,
        device_keys=device_keys,
        device_issuer_url=device_issuer_url,
    )
    child_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    ztauthz = ztauthz_command()

    def process(name: str, argv: list[str], ready: str) -> ManagedProcess:
        return ManagedProcess(
            name,
            argv,
            log_path=stack.log(name),
            ready=HttpReady(ready),
            env=child_env,
            ready_timeout=ready_timeout,
        )

    issuer_argv = [*ztauthz, "dev", "issuer", "--keys", str(keys_dir)]
    issuer_argv += ["--host", LOOPBACK, "--port", str(ports.issuer)]
    issuer = process(
        "issuer",
        issuer_argv,
        f"{issuer_url}/.well-known/openid-configuration",
    )
    upstream = process(
        "upstream",
        [*ztauthz, "dev", "upstream", "--host", LOOPBACK, "--port", str(ports.upstream)],
        f"{stack.upstream_url}/",
    )
    envoy = process(
        "envoy",
        envoy_command(envoy_config),
        f"http://{LOOPBACK}:{ports.envoy_admin}/ready",
    )
    serve = process(
        "ztauthz", [*ztauthz, "serve", "--config", str(config_path)], f"{stack.admin_url}/readyz"
    )
    extra: list[ManagedProcess] = []
    if pki is not None:
        mtls_config = write_envoy_config(
            workdir / "envoy-mtls.yaml",
            template=SHIPPED_ENVOY_MTLS_CONFIG,
            listen_port=ports.envoy_mtls,
            admin_port=ports.envoy_mtls_admin,
            authz_port=ports.check,
            upstream_port=ports.upstream,
            tls=DownstreamTls(pki.server.certificate, pki.server.key, client_ca=pki.ca),
        )
        extra.append(
            process(
                "envoy-mtls",
                envoy_command(mtls_config),
                f"http://{LOOPBACK}:{ports.envoy_mtls_admin}/ready",
            )
        )
    if device_issuer_url is not None:
        device_argv = [*ztauthz, "dev", "issuer", "--keys", str(device_keys_dir)]
        device_argv += ["--host", LOOPBACK, "--port", str(ports.device_issuer)]
        extra.append(
            process(
                "device-issuer",
                device_argv,
                f"{device_issuer_url}/.well-known/openid-configuration",
            )
        )
    # Envoy does not need ztauthz to start; ztauthz needs the issuers' keys to become ready.
    group.start(issuer, upstream, envoy, *extra)
    group.start(serve)
    return stack


# --- the demo requests -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def http_request(
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    host: str = LOOPBACK,
    timeout: float = 10.0,
) -> Reply:
    """One HTTP/1.1 request with the path sent byte-for-byte as given (no client-side
    normalization, unlike most HTTP clients), so path handling can be observed."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


def https_request(
    port: int,
    pki: DevPki,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    client: tuple[Path, Path] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One HTTPS request to the mTLS listener, trusting the dev CA, presenting ``client``
    (certificate and key files; the demo workload's by default)."""
    certificate, key = client or (pki.workload.certificate, pki.workload.key)
    return tls_request(port, pki.ca, method, path, headers, (certificate, key), timeout)


def tls_request(
    port: int,
    ca: Path,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    client: tuple[Path, Path] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One HTTPS request to a loopback listener trusting ``ca``, presenting ``client``
    (certificate and key files) or no certificate."""
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(*client)
    conn = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=timeout)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()
