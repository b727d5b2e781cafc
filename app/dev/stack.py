"""``ztauthz dev stack``: the whole local demo on loopback, started and stopped as one.

It starts the dev OIDC issuer, a dev device-trust provider (a second issuer, for device
attestation tokens), the echo upstream, ``ztauthz serve``, Envoy running the shipped bootstrap
(deploy/envoy/envoy.yaml, only re-ported) and a second Envoy with an mTLS listener
(deploy/envoy/envoy-mtls.yaml, with a generated dev CA and certificates), waits until each is
ready, then prints curl commands for an allowed, an unauthenticated (401), a forbidden (403) and
a workload (mTLS, no token) request.
Ctrl-C (or SIGTERM) stops everything in reverse order. ``--check`` sends the three requests
itself and exits 0 only if each got the expected answer.

Everything it writes goes to one directory (``.dev/`` by default): the dev keys (shared with
``ztauthz dev token``), the generated ztauthz and Envoy configurations, and one log per process.
The integration tests start the same stack through ``start_stack``.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import secrets
import shlex
import signal
import socket
import ssl
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from app.dev.envoy import (
    SHIPPED_ENVOY_CONFIG,
    SHIPPED_ENVOY_MTLS_CONFIG,
    DownstreamTls,
    EnvoyConfigError,
    EnvoyNotFound,
    envoy_command,
    write_envoy_config,
)
from app.dev.keys import DevKeyError, DevKeys
from app.dev.pki import DEMO_WORKLOAD_ID, DevPki, make_dev_pki
from app.dev.procs import HttpReady, ManagedProcess, ProcessError, ProcessGroup, free_port
from app.dev.tokens import mint
from app.settings.server import ADMIN_PORT, CHECK_PORT

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_POLICIES = REPO_ROOT / "policies"
AUDIENCE = "https://api.example.com"
RECEIVER_AUDIENCE = "urn:ztauthz:dev-receiver"  # the aud of the dev transmitter's SETs
DEV_STREAM = "dev"
PUSH_TOKEN_FILE = "ssf-push-token"  # noqa: S105 - a file name: the dev stream's push token
ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name: the kill switch's token
LOOPBACK = "127.0.0.1"
DEMO_TOKEN_TTL = 600.0  # within the demo issuer's max_token_lifetime (15m)


@dataclass(frozen=True, slots=True)
class Ports:
    """Every port the stack listens on (all on loopback). 0 means "any free port"."""

    envoy: int = 10000
    envoy_admin: int = 9901
    check: int = CHECK_PORT
    admin: int = ADMIN_PORT
    issuer: int = 9400
    upstream: int = 8081
    envoy_mtls: int = 10443  # the mTLS listener (workload identity)
    envoy_mtls_admin: int = 9902
    device_issuer: int = 9401  # the dev device-trust provider (device attestation tokens)
    receiver: int = 9200  # ztauthz's SSF receiver (security events, RFC 8935)

    def resolved(self) -> Ports:
        """The same ports with each 0 replaced by a distinct free port."""
        given = [getattr(self, f.name) for f in fields(self)]
        used = {port for port in given if port}
        if len(used) != len([port for port in given if port]):
            raise ValueError(f"the same port is given twice: {given}")
        chosen = []
        for port in given:
            if port == 0:
                port = free_port()
                while port in used:
                    port = free_port()
            used.add(port)
            chosen.append(port)
        return Ports(*chosen)

    @classmethod
    def ephemeral(cls) -> Ports:
        return cls(**{f.name: 0 for f in fields(cls)}).resolved()


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


def demo_config() -> dict[str, Any]:
    """The ztauthz configuration of the demo (ports and issuer URLs are set by bind_config).

    Evidence: Envoy is the edge (its peer is the client); the dev issuer's tokens may name a
    device (``device_id``, ``device.managed``, ``device.compliant``) and a country; the dev
    device provider's attestation tokens arrive in ``x-device-token``; the mTLS Envoy sets
    ``x-forwarded-client-cert`` (SANITIZE_SET), so workload identities are believed over HTTP.
    """
    issuer = f"http://{LOOPBACK}:9400"
    return {
        "issuers": [
            {
                "issuer": issuer,
                "discovery": True,
                "audiences": [AUDIENCE],
                "algorithms": ["RS256", "ES256"],
                "max_token_lifetime": "15m",
                "leeway": "30s",
            }
        ],
        "evidence": {
            "client_ip": {},
            "token_claims": [
                {
                    "issuer": issuer,
                    "device": {
                        "id": "device_id",
                        "managed": "device.managed",
                        "compliant": "device.compliant",
                    },
                    "country": "country",
                }
            ],
            "device_token": {
                "provider": {
                    "issuer": f"http://{LOOPBACK}:9401",
                    "audiences": [AUDIENCE],
                    "algorithms": ["ES256", "RS256"],
                    "max_token_lifetime": "1h",
                },
                "max_age": "10m",
            },
            "client_certificate": {"envoy_forward_client_cert_details": "SANITIZE_SET"},
            # The dev issuer's signed `country` claim is the request's country (there is no
            # GeoIP database on loopback): `ztauthz dev token --country DE` shows x-auth-country.
            "location": {"country_from_claims": True},
        },
        # The dev issuer is also an SSF transmitter (``ztauthz dev signal``): its CAEP events
        # are pushed to the receiver; bind_config sets the tokens' files and the port.
        "signals": {
            "transmitters": [
                {
                    "name": DEV_STREAM,
                    "issuer": issuer,
                    "audiences": [RECEIVER_AUDIENCE],
                    "push": {"token_file": PUSH_TOKEN_FILE},
                }
            ],
            "admin": {"token_file": ADMIN_TOKEN_FILE},
        },
        "log_level": "info",
    }


def bind_config(
    base: Mapping[str, Any],
    *,
    ports: Ports,
    issuer_url: str,
    policies: Path,
    device_issuer_url: str | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """``base`` with the listeners, the (first) issuer's URL and the policy directory set.

    Evidence settings follow the URLs: ``token_claims`` entries for the first issuer's original
    URL get the new one, and the device provider gets ``device_issuer_url`` when given. So do
    signals: a transmitter with the first issuer's URL gets the new one, the receiver listens on
    ``ports.receiver``, and relative token files are made relative to ``workdir``.
    """
    config = copy.deepcopy(dict(base))
    config["server"] = {
        "check": {"host": LOOPBACK, "port": ports.check, "path_prefix": "/check"},
        "admin": {"host": LOOPBACK, "port": ports.admin},
    }
    issuers = [dict(i) for i in config.get("issuers", [])]
    if not issuers:
        raise ValueError("the base configuration must list at least one issuer")
    original = issuers[0].get("issuer")
    issuers[0]["issuer"] = issuer_url
    config["issuers"] = issuers
    config["policies"] = str(policies.resolve())
    evidence = config.get("evidence")
    if isinstance(evidence, dict):
        for entry in evidence.get("token_claims", []):
            if isinstance(entry, dict) and entry.get("issuer") == original:
                entry["issuer"] = issuer_url
        device_token = evidence.get("device_token")
        if device_issuer_url is not None and isinstance(device_token, dict):
            device_token.setdefault("provider", {})["issuer"] = device_issuer_url
    signals = config.get("signals")
    if isinstance(signals, dict):
        signals["receiver"] = {"listener": "own", "host": LOOPBACK, "port": ports.receiver}
        for transmitter in signals.get("transmitters", []):
            if isinstance(transmitter, dict) and transmitter.get("issuer") == original:
                transmitter["issuer"] = issuer_url
            push = transmitter.get("push") if isinstance(transmitter, dict) else None
            if isinstance(push, dict) and workdir is not None and "token_file" in push:
                push["token_file"] = str((workdir / push["token_file"]).resolve())
        admin = signals.get("admin")
        if isinstance(admin, dict) and workdir is not None and "token_file" in admin:
            admin["token_file"] = str((workdir / admin["token_file"]).resolve())
    return config


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
class DemoRequest:
    name: str
    title: str
    method: str
    path: str
    token: str | None
    expect_status: int
    expect_reason: str | None = None
    workload: bool = False  # sent over the mTLS listener with the demo workload's certificate
    # Sent as "Authorization: DPoP <token>" with a fresh proof signed by this key (RFC 9449).
    dpop_key: Path | None = None


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


def demo_dpop_keys(stack: Stack) -> tuple[Path, Path]:
    """Alice's DPoP key and another one (a thief's), kept in the work directory."""
    from app.dev.dpop import DpopKey

    keys = []
    for name in ("alice", "thief"):
        path = stack.workdir / "dpop" / f"{name}.pem"
        if not path.exists():
            DpopKey.generate("ES256").save(path)
        keys.append(path)
    return keys[0], keys[1]


def demo_requests(stack: Stack, now: float | None = None) -> list[DemoRequest]:
    """Requests against the shipped policies: allow, 401, 403; a DPoP-bound token allowed with
    its key's proof and refused with another key's; a workload over mTLS."""
    from app.dev.dpop import DpopKey

    alice_key, thief_key = demo_dpop_keys(stack)
    bound = mint(
        stack.keys,
        issuer=stack.issuer_url,
        audience=stack.audience,
        subject="alice",
        groups=["finance"],
        scopes=["invoices:read"],
        ttl=DEMO_TOKEN_TTL,
        now=now,
        extra_claims={"cnf": {"jkt": DpopKey.load(alice_key).jkt}},
    )
    finance = mint(
        stack.keys,
        issuer=stack.issuer_url,
        audience=stack.audience,
        subject="alice",
        groups=["finance"],
        scopes=["invoices:read"],
        ttl=DEMO_TOKEN_TTL,
        now=now,
    )
    contractor = mint(
        stack.keys,
        issuer=stack.issuer_url,
        audience=stack.audience,
        subject="carol",
        groups=["contractors"],
        scopes=["invoices:read", "invoices:write"],
        alg="ES256",
        ttl=DEMO_TOKEN_TTL,
        now=now,
    )
    return [
        DemoRequest(
            "ALICE_TOKEN",
            "allowed: alice (group finance, scope invoices:read) reads invoices",
            "GET",
            "/invoices",
            finance,
            200,
        ),
        DemoRequest(
            "",
            "401: no token on a protected route",
            "GET",
            "/invoices",
            None,
            401,
            "token_missing",
        ),
        DemoRequest(
            "CAROL_TOKEN",
            "403: carol (group contractors) may never delete",
            "DELETE",
            "/invoices/42",
            contractor,
            403,
            "denied_by_rule",
        ),
        DemoRequest(
            "BOUND_TOKEN",
            "allowed: alice's DPoP-bound token (cnf.jkt) with a proof from her key",
            "GET",
            "/invoices",
            bound,
            200,
            dpop_key=alice_key,
        ),
        DemoRequest(
            "BOUND_TOKEN",
            "401: the same token replayed by someone else, with a proof from another key",
            "GET",
            "/invoices",
            bound,
            401,
            "dpop_key_mismatch",
            dpop_key=thief_key,
        ),
        *(
            []
            if stack.pki is None
            else [
                DemoRequest(
                    "",
                    f"workload: {DEMO_WORKLOAD_ID} (mTLS, no token) reads invoices",
                    "GET",
                    "/invoices",
                    None,
                    200,
                    workload=True,
                )
            ]
        ),
    ]


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
    context = ssl.create_default_context(cafile=str(pki.ca))
    certificate, key = client or (pki.workload.certificate, pki.workload.key)
    context.load_cert_chain(certificate, key)
    conn = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=timeout)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


def send(stack: Stack, request: DemoRequest) -> Reply:
    """Send a demo request through Envoy (the mTLS one for workload requests); a DPoP request
    gets a fresh proof for this very request."""
    headers = {} if request.token is None else {"Authorization": f"Bearer {request.token}"}
    if request.dpop_key is not None and request.token is not None:
        from app.dev.dpop import DpopKey

        proof = DpopKey.load(request.dpop_key).proof(
            request.method, stack.envoy_url + request.path, access_token=request.token
        )
        headers = {"Authorization": f"DPoP {request.token}", "DPoP": proof}
    if request.workload and stack.pki is not None:
        return https_request(stack.ports.envoy_mtls, stack.pki, request.method, request.path)
    return http_request(stack.ports.envoy, request.method, request.path, headers)


def problems(request: DemoRequest, reply: Reply) -> list[str]:
    """What is wrong with ``reply`` for ``request`` (empty: as expected)."""
    found: list[str] = []
    if reply.status != request.expect_status:
        found.append(f"status {reply.status}, expected {request.expect_status}")
        return found
    body = reply.json()
    if request.expect_status == 200:
        upstream_headers = body.get("headers", {}) if isinstance(body, dict) else {}
        identity = "x-auth-workload" if request.workload else "x-auth-subject"
        if not upstream_headers.get(identity):
            found.append(f"the upstream did not receive {identity}")
        if not upstream_headers.get("x-auth-decision-id"):
            found.append("the upstream did not receive x-auth-decision-id")
    elif request.expect_status == 401 and not reply.headers.get("www-authenticate", "").startswith(
        ("Bearer ", "DPoP ")
    ):
        found.append("no Bearer or DPoP challenge in WWW-Authenticate")
    reason = body.get("reason") if isinstance(body, dict) else None
    if request.expect_reason is not None and reason != request.expect_reason:
        found.append(f"reason {reason!r}, expected {request.expect_reason!r}")
    return found


def curl_command(stack: Stack, request: DemoRequest) -> str:
    parts = ["curl", "-sS", "-i"]
    if request.method != "GET":
        parts += ["-X", request.method]
    base = stack.envoy_url
    if request.workload and stack.pki is not None:
        pki = stack.pki
        parts += ["--cacert", str(pki.ca), "--cert", str(pki.workload.certificate)]
        parts += ["--key", str(pki.workload.key)]
        base = stack.envoy_mtls_url
    command = " ".join(shlex.quote(p) for p in parts)
    if request.token is not None and request.dpop_key is not None:
        # A proof is single-use and lives a minute: the command makes a fresh one.
        proof = (
            f"ztauthz dev dpop-proof --key {shlex.quote(str(request.dpop_key))} "
            f"--method {request.method} --url {shlex.quote(base + request.path)} "
            f'--token "${request.name}"'
        )
        command += f' -H "Authorization: DPoP ${request.name}" -H "DPoP: $({proof})"'
    elif request.token is not None:
        command += f' -H "Authorization: Bearer ${request.name}"'
    return f"{command} {shlex.quote(base + request.path)}"


def _summary(request: DemoRequest, reply: Reply) -> str:
    body = reply.json()
    if reply.status == 200 and isinstance(body, dict):
        seen = {k: v for k, v in body.get("headers", {}).items() if k.startswith("x-auth-")}
        return f"{reply.status}; the upstream received {json.dumps(seen, sort_keys=True)}"
    challenge = reply.headers.get("www-authenticate")
    extra = f"; WWW-Authenticate: {challenge}" if challenge else ""
    return f"{reply.status}{extra}; body {reply.body.decode('utf-8', 'replace')}"


# --- the command -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Ports()
    parser.add_argument("--dir", type=Path, default=Path(".dev"), help="work directory (.dev)")
    parser.add_argument(
        "--policies", type=Path, default=SHIPPED_POLICIES, help="policy directory (policies/)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="send the demo requests, print the results, stop; exit 0 only if all are as expected",
    )
    for f in fields(defaults):
        parser.add_argument(
            "--" + f.name.replace("_", "-") + "-port",
            dest=f"{f.name}_port",
            type=int,
            default=getattr(defaults, f.name),
            help=f"{f.name.replace('_', ' ')} port ({getattr(defaults, f.name)}; 0: any free)",
        )


class _Stop(Exception):
    pass


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into an exception, so the supervisor always cleans up."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(args: argparse.Namespace) -> int:
    try:
        ports = Ports(**{f.name: getattr(args, f"{f.name}_port") for f in fields(Ports)})
        ports = ports.resolved()
    except ValueError as exc:
        print(f"ztauthz dev stack: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout
    try:
        with _stop_on_signals(), ProcessGroup() as group:
            print(
                "starting issuers, upstream, Envoy (plain and mTLS) and ztauthz on 127.0.0.1 ...",
                file=out,
            )
            stack = start_stack(
                group,
                workdir=args.dir,
                ports=ports,
                policies=args.policies,
                mtls=True,
                device_issuer=True,
            )
            requests = demo_requests(stack, now=time.time())
            if args.check:
                return _check(stack, requests)
            _explain(stack, requests)
            while True:
                group.check_alive()
                time.sleep(0.5)
    except _Stop:
        print("\nstopped.", file=out)
        return 130 if args.check else 0
    except (ProcessError, DevKeyError, EnvoyConfigError, EnvoyNotFound) as exc:
        print(f"ztauthz dev stack: {exc}", file=sys.stderr)
        return 1


def signal_demo(stack: Stack) -> list[str]:
    """Continuous access evaluation, end to end: a token allowed, a CAEP session-revoked SET
    signed by the dev transmitter and pushed to the receiver, the same token refused.
    Returns what went wrong (empty: as expected); prints each step."""
    from app.dev.transmitter import push, session_revoked, subject

    sid = "demo-" + secrets.token_hex(4)
    token = mint(
        stack.keys,
        issuer=stack.issuer_url,
        audience=stack.audience,
        subject="dave",
        groups=["finance"],
        scopes=["invoices:read"],
        extra_claims={"sid": sid},
        ttl=DEMO_TOKEN_TTL,
    )
    request = DemoRequest("", "signals", "GET", "/invoices", token, 200)
    found: list[str] = []
    before = send(stack, request)
    print(f"      GET /invoices as dave (session {sid}) -> {before.status}")
    if before.status != 200:
        found.append(f"before the event: status {before.status}, expected 200")
    set_token = session_revoked(
        stack.keys,
        issuer=stack.issuer_url,
        audience=RECEIVER_AUDIENCE,
        sub_id=subject(stack.issuer_url, sub="dave", session=sid),
    )
    push_token = (stack.workdir / PUSH_TOKEN_FILE).read_text(encoding="utf-8").strip()
    answer = push(stack.receiver_url, push_token, set_token)
    print(f"      POST {stack.receiver_url} (CAEP session-revoked) -> {answer.status}")
    if answer.status != 202:
        found.append(f"the receiver answered {answer.status}: {answer.body}")
    after = send(stack, request)
    reason = after.json().get("reason") if isinstance(after.json(), dict) else None
    print(f"      GET /invoices with the same token -> {after.status} {reason}")
    if (after.status, reason) != (401, "session_revoked"):
        found.append(f"after the event: {after.status} {reason}, expected 401 session_revoked")
    return found


def _check(stack: Stack, requests: list[DemoRequest]) -> int:
    failed = 0
    for request in requests:
        reply = send(stack, request)
        wrong = problems(request, reply)
        failed += bool(wrong)
        print(f"[{'ok' if not wrong else 'FAIL'}] {request.title}")
        print(f"      {request.method} {request.path} -> {_summary(request, reply)}")
        for problem in wrong:
            print(f"      problem: {problem}")
    wrong = signal_demo(stack)
    print(
        f"[{'ok' if not wrong else 'FAIL'}] a session-revoked security event ends the session at once"
    )
    for problem in wrong:
        print(f"      problem: {problem}")
    total = len(requests) + 1
    failed += bool(wrong)
    print(f"demo check: {total - failed} of {total} scenarios as expected")
    return 1 if failed else 0


def _explain(stack: Stack, requests: list[DemoRequest]) -> None:
    p = stack.ports
    print(
        f"""
ztauthz demo stack is ready.
DEVELOPMENT ONLY: the dev issuer signs with key files in {stack.workdir}/keys.

  Envoy          {stack.envoy_url}   (admin http://{LOOPBACK}:{p.envoy_admin})
  Envoy (mTLS)   {stack.envoy_mtls_url}   (admin http://{LOOPBACK}:{p.envoy_mtls_admin})
  ztauthz        {stack.check_url}/check   (admin {stack.admin_url}/readyz)
  dev issuer     {stack.issuer_url}
  device issuer  {stack.device_issuer_url}   (dev device-trust provider: device tokens)
  dev PKI        {stack.workdir}/pki/   (CA, Envoy's certificate, the workload's certificate)
  SSF receiver   {stack.receiver_url}   (security events; docs/continuous-access-evaluation.md)
  echo upstream  {stack.upstream_url}
  policies       {stack.policies}
  logs           {stack.workdir}/logs/

Demo tokens (valid for {int(DEMO_TOKEN_TTL // 60)} minutes):
"""
    )
    exported = set()
    for request in requests:
        if request.token is not None and request.name not in exported:
            exported.add(request.name)
            print(f"export {request.name}={shlex.quote(request.token)}")
    print()
    for request in requests:
        print(f"# {request.title}")
        print(curl_command(stack, request))
        print()
    print(
        "More tokens: ztauthz dev token --keys "
        f"{shlex.quote(str(stack.workdir / 'keys'))} --issuer {stack.issuer_url} "
        f"--aud {stack.audience} --sub bob --group finance --scope invoices:read\n"
        "Device evidence: add --device-id laptop-1 to that token, and send "
        '-H "x-device-token: $(ztauthz dev device-token --keys '
        f"{shlex.quote(str(stack.workdir / 'device-keys'))} --issuer {stack.device_issuer_url} "
        f'--aud {stack.audience} --device-id laptop-1)"\n'
        "Security events: a CAEP session-revoked for alice, signed by the dev transmitter:\n"
        f"  ztauthz dev signal session-revoked --receiver {stack.receiver_url} "
        f"--token-file {shlex.quote(str(stack.workdir / PUSH_TOKEN_FILE))} "
        f"--keys {shlex.quote(str(stack.workdir / 'keys'))} --issuer {stack.issuer_url} "
        f"--aud {RECEIVER_AUDIENCE} --sub alice\n"
        "Kill switch: ztauthz revoke --config "
        f"{shlex.quote(str(stack.config_path))} --subject alice\n"
        "Press Ctrl-C to stop everything.",
        flush=True,
    )
