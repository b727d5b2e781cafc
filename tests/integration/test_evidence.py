"""Device, location and workload evidence through real Envoy: the shipped bootstraps (HTTP, the
mTLS+XFCC variant, and gRPC behind an mTLS listener), a dev IdP, a dev device provider, a GeoIP
database written for the test, and client certificates generated here.

Loopback (127.0.0.0/8) is configured as a trusted proxy, so each test plays the load balancer in
front of Envoy by sending the X-Forwarded-For entry it would append; everything left of that
entry is a client's claim. Every spoof attempt is sent through Envoy and must be believed by
nothing: X-Forwarded-For beyond the trusted proxies, a forged x-ztauthz-client-address, an
x-country header, XFCC sent by the client (with and without mTLS), a device token bound to
someone else, a device token signed by someone else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from app.dev.envoy import (
    SHIPPED_ENVOY_GRPC_CONFIG,
    DownstreamTls,
    envoy_command,
    write_envoy_config,
)
from app.dev.pki import DEMO_WORKLOAD_ID, DEVICE_URI_PREFIX, CertPair
from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import Reply, Stack, http_request, https_request, start_stack
from app.dev.stack_config import Ports
from app.dev.tokens import DROP, mint, mint_device_token
from tests.unit.evidence.evidence_support import write_mmdb

pytestmark = pytest.mark.integration

DE, NL, US, TOR, NOWHERE = (
    "203.0.113.10",
    "198.51.100.20",
    "100.64.0.30",
    "203.0.113.200",
    "100.65.0.1",
)
OTHER_WORKLOAD = "spiffe://example.org/ns/web/sa/frontend"

POLICY = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: evidence}
spec:
  rules:
    - id: reports-need-a-healthy-device
      effect: allow
      match: {methods: [GET], paths: ["/reports/**"]}
      subject: {groups_any: [finance]}
      device:
        managed: true
        compliant: true
        disk_encrypted: true
        max_risk: 30
        max_posture_age: 1h
        min_os_version: {macos: "14.4", windows: "10.0.22631"}
        sources_any: [device_token]
    - id: eu-only
      effect: allow
      match: {methods: [GET], paths: ["/eu/**"]}
      subject: {groups_any: [finance]}
      location: {countries_any: [DE, FR, NL]}
    - id: corp-network-only
      effect: allow
      match: {methods: [GET], paths: ["/corp/**"]}
      subject: {groups_any: [finance]}
      location: {networks_any: [corp-vpn]}
    - id: never-from-tor
      effect: deny
      match: {paths: ["/eu/**", "/corp/**"]}
      location: {networks_any: [tor-exits]}
    - id: billing-worker-reads-the-ledger
      effect: allow
      match: {methods: [GET], paths: ["/ledger/**"]}
      workload: {spiffe_ids_any: ["spiffe://example.org/ns/billing/sa/invoice-worker"]}
    - id: certificate-bound-reads
      effect: allow
      match: {methods: [GET], paths: ["/bound/**"]}
      subject: {groups_any: [finance]}
    - id: managed-kiosks
      effect: allow
      anonymous: true
      match: {methods: [GET], paths: ["/kiosk/**"]}
      device: {managed: true, sources_any: [client_certificate]}
"""


class Evidence:
    """The running stack plus the gRPC Envoy, and how to talk to each."""

    def __init__(self, stack: Stack, grpc_port: int, certs: dict[str, CertPair]) -> None:
        self.stack = stack
        self.grpc_port = grpc_port
        self.certs = certs

    def token(
        self, subject: str = "alice", groups: tuple[str, ...] = ("finance",), **claims: Any
    ) -> str:
        return mint(
            self.stack.keys,
            issuer=self.stack.issuer_url,
            audience=self.stack.audience,
            subject=subject,
            groups=list(groups),
            extra_claims=claims,
        )

    def device_token(self, device_id: str = "laptop-7", **posture: Any) -> str:
        assert self.stack.device_keys is not None and self.stack.device_issuer_url is not None
        return mint_device_token(
            self.stack.device_keys,
            issuer=self.stack.device_issuer_url,
            audience=self.stack.audience,
            device_id=device_id,
            **posture,
        )

    def send(
        self,
        transport: str,
        path: str,
        headers: dict[str, str] | None = None,
        cert: str | None = None,
    ) -> Reply:
        """HTTP: the plain listener, or the mTLS one when ``cert`` names a client certificate.
        gRPC: the mTLS listener in front of ztauthz's gRPC listener (a certificate is needed)."""
        pki = self.stack.pki
        assert pki is not None
        sent = dict(headers or {})
        if transport == "grpc":
            pair = self.certs[cert or "workload"]
            return https_request(
                self.grpc_port, pki, "GET", path, sent, client=(pair.certificate, pair.key)
            )
        if cert is None:
            return http_request(self.stack.ports.envoy, "GET", path, sent)
        pair = self.certs[cert]
        return https_request(
            self.stack.ports.envoy_mtls, pki, "GET", path, sent, client=(pair.certificate, pair.key)
        )


@pytest.fixture(scope="module")
def ev(tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str]) -> Iterator[Evidence]:
    workdir = tmp_path_factory.mktemp("evidence")
    policies = workdir / "policies"
    policies.mkdir()
    (policies / "evidence.yaml").write_text(POLICY, encoding="utf-8")
    mmdb = write_mmdb(
        workdir / "country.mmdb",
        {"203.0.113.0/24": "DE", "198.51.100.0/24": "NL", "100.64.0.0/16": "US"},
    )
    issuer = "http://127.0.0.1:9400"
    config: dict[str, Any] = {
        "issuers": [
            {
                "issuer": issuer,
                "audiences": ["https://api.example.com"],
                "max_token_lifetime": "15m",
            }
        ],
        "evidence": {
            "client_ip": {"trusted_proxies": ["127.0.0.0/8"]},
            "networks": {"corp-vpn": ["198.51.100.0/24"], "tor-exits": ["203.0.113.128/25"]},
            "geoip": {"path": str(mmdb)},
            "token_claims": [
                {
                    "issuer": issuer,
                    "device": {"id": "device_id", "managed": "device.managed"},
                    "country": "country",
                }
            ],
            "device_token": {
                "provider": {
                    "issuer": "http://127.0.0.1:9401",
                    "audiences": ["https://api.example.com"],
                    "algorithms": ["ES256", "RS256"],
                    "max_token_lifetime": "1h",
                },
                "max_age": "5m",
            },
            "client_certificate": {
                "envoy_forward_client_cert_details": "SANITIZE_SET",
                "device_uri_prefix": DEVICE_URI_PREFIX,
                "devices_are_managed": True,
            },
        },
    }
    grpc_port, grpc_envoy, grpc_admin = free_port(), free_port(), free_port()
    env = {
        **child_env,
        "ZTAUTHZ_SERVER__GRPC__ENABLED": "true",
        "ZTAUTHZ_SERVER__GRPC__PORT": str(grpc_port),
    }
    with ProcessGroup() as group:
        stack = start_stack(
            group,
            workdir=workdir,
            ports=Ports.ephemeral(),
            policies=policies,
            config=config,
            env=env,
            mtls=True,
            device_issuer=True,
        )
        pki = stack.pki
        assert pki is not None
        certs = {
            "workload": pki.workload,
            "other": pki.authority.issue("frontend", uris=[OTHER_WORKLOAD]),
            "kiosk": pki.authority.issue("kiosk", uris=[DEVICE_URI_PREFIX + "kiosk-4"]),
        }
        grpc_config = write_envoy_config(
            workdir / "envoy-grpc.yaml",
            template=SHIPPED_ENVOY_GRPC_CONFIG,
            listen_port=grpc_envoy,
            admin_port=grpc_admin,
            authz_port=grpc_port,
            upstream_port=stack.ports.upstream,
            tls=DownstreamTls(pki.server.certificate, pki.server.key, client_ca=pki.ca),
        )
        group.start(
            ManagedProcess(
                "envoy-grpc",
                envoy_command(grpc_config),
                log_path=stack.log("envoy-grpc"),
                ready=HttpReady(f"http://127.0.0.1:{grpc_admin}/ready"),
            )
        )
        yield Evidence(stack, grpc_envoy, certs)


def upstream_saw(reply: Reply) -> dict[str, str]:
    body = reply.json()
    assert reply.status == 200 and isinstance(body, dict), (reply.status, reply.body)
    headers: dict[str, str] = body["headers"]
    return headers


def reason(reply: Reply) -> tuple[int, str | None]:
    body = reply.json()
    return reply.status, body.get("reason") if isinstance(body, dict) else None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


TRANSPORTS = ["http", "grpc"]


# --- device posture ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_healthy_bound_device_is_allowed(ev: Evidence, transport: str) -> None:
    headers = {**bearer(ev.token(device_id="laptop-7")), "x-device-token": ev.device_token()}
    seen = upstream_saw(ev.send(transport, "/reports/q3", headers))
    assert seen["x-auth-device-id"] == "laptop-7"
    assert seen["x-auth-rule"] == "reports-need-a-healthy-device"
    assert "x-device-token" in seen  # it is the client's own header; ztauthz only read it


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("identity", "device", "expected"),
    [
        ({"device_id": "laptop-7"}, None, "device_missing"),
        # Only the IdP's claims describe the device: this rule wants an attested device.
        ({"device_id": "laptop-7", "device": {"managed": True}}, None, "device_missing"),
        # Spoof: a valid device token of someone else's device.
        ({"device_id": "laptop-9"}, {}, "device_unbound"),
        ({}, {}, "device_unbound"),
        ({"device_id": "laptop-7"}, {"os_version": "14.3.1"}, "device_noncompliant"),
        ({"device_id": "laptop-7"}, {"compliant": False}, "device_noncompliant"),
        ({"device_id": "laptop-7"}, {"risk_score": 31}, "device_noncompliant"),
        (
            {"device_id": "laptop-7"},
            {"os_name": "Linux", "os_version": "6.8"},
            "device_noncompliant",
        ),
        ({"device_id": "laptop-7"}, {"assessed_at": time.time() - 7200}, "device_stale"),
        ({"device_id": "laptop-7"}, {"now": time.time() - 600, "ttl": 900}, "device_stale"),
        # No posture time: a posture of unknown age, not one as fresh as the token's iat.
        ({"device_id": "laptop-7"}, {"extra_claims": {"posture_time": DROP}}, "device_stale"),
        # An unreadable posture time refuses the device token itself.
        (
            {"device_id": "laptop-7"},
            {"extra_claims": {"posture_time": "just now"}},
            "device_invalid",
        ),
        (
            {"device_id": "laptop-7"},
            {"extra_claims": {"posture_time": [int(time.time())]}},
            "device_invalid",
        ),
        (
            {"device_id": "laptop-7"},
            {"extra_claims": {"posture_time": int(time.time()) + 86_400}},
            "device_invalid",
        ),
    ],
)
def test_device_posture_is_enforced_as_written(
    ev: Evidence,
    transport: str,
    identity: dict[str, Any],
    device: dict[str, Any] | None,
    expected: str,
) -> None:
    headers = bearer(ev.token(**identity))
    if device is not None:
        headers["x-device-token"] = ev.device_token(**device)
    assert reason(ev.send(transport, "/reports/q3", headers)) == (403, expected)


def test_windows_versions_compare_as_versions(ev: Evidence) -> None:
    ok = ev.device_token(os_name="Windows", os_version="10.0.22631.3155")
    old = ev.device_token(os_name="Windows", os_version="10.0.9999")
    identity = bearer(ev.token(device_id="laptop-7"))
    assert ev.send("http", "/reports/q3", {**identity, "x-device-token": ok}).status == 200
    assert reason(ev.send("http", "/reports/q3", {**identity, "x-device-token": old})) == (
        403,
        "device_noncompliant",
    )


def test_a_device_token_signed_by_someone_else_is_not_evidence(ev: Evidence) -> None:
    # Signed with the identity issuer's keys instead of the device provider's, and claiming
    # the provider as its issuer: the signature does not verify with the provider's keys.
    forged = mint_device_token(
        ev.stack.keys,
        issuer=ev.stack.device_issuer_url or "",
        audience=ev.stack.audience,
        device_id="laptop-7",
    )
    headers = {**bearer(ev.token(device_id="laptop-7")), "x-device-token": forged}
    assert reason(ev.send("http", "/reports/q3", headers)) == (403, "device_invalid")
    # Nor is an identity token passed off as a device token.
    headers["x-device-token"] = ev.token(subject="laptop-7")
    assert reason(ev.send("http", "/reports/q3", headers)) == (403, "device_invalid")


# --- location: country and networks --------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("forwarded_for", "extra", "claims", "expected"),
    [
        (DE, {}, {}, (200, None)),
        (NL, {}, {}, (200, None)),
        (US, {}, {}, (403, "location_denied")),
        (NOWHERE, {}, {}, (403, "country_unknown")),  # no GeoIP entry
        # Spoofs: only the entry the trusted proxy (loopback) appended is believed.
        (f"{DE}, {US}", {}, {}, (403, "location_denied")),
        (US, {"x-country": "DE"}, {}, (403, "location_denied")),
        (US, {}, {"country": "DE"}, (403, "location_denied")),  # claims not used by config
        # A forged peer address: Envoy overwrites it (HTTP) or it is no CheckRequest field
        # (gRPC); the trusted proxy has no entry in front, so the address is unknown, and the
        # no-Tor deny rule fails closed.
        (None, {"x-ztauthz-client-address": DE}, {}, (403, "client_ip_unknown")),
        # A Tor exit in Germany: the deny rule wins.
        (TOR, {}, {}, (403, "denied_by_rule")),
        # An address that cannot be read: unknown, and the no-Tor deny rule fails closed.
        ("not-an-address", {}, {}, (403, "client_ip_unknown")),
    ],
)
def test_country_is_enforced_as_written(
    ev: Evidence,
    transport: str,
    forwarded_for: str | None,
    extra: dict[str, str],
    claims: dict[str, Any],
    expected: tuple[int, str | None],
) -> None:
    headers = {**bearer(ev.token(**claims)), **extra}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    reply = ev.send(transport, "/eu/prices", headers)
    if expected[0] == 200:
        seen = upstream_saw(reply)
        assert seen["x-auth-country"] in ("DE", "NL")
        assert "x-country" not in seen or seen["x-country"] != seen["x-auth-country"]
    else:
        assert reason(reply) == expected


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("forwarded_for", "expected"),
    [
        (NL, 200),
        (DE, 403),
        (f"{NL}, {DE}", 403),  # a corp address claimed beyond the trusted proxy
        (f"{NL}, 127.0.0.9", 200),  # a chain of trusted proxies is peeled off
    ],
)
def test_networks_are_enforced_as_written(
    ev: Evidence, transport: str, forwarded_for: str, expected: int
) -> None:
    headers = {**bearer(ev.token()), "X-Forwarded-For": forwarded_for}
    reply = ev.send(transport, "/corp/wiki", headers)
    assert reply.status == expected, reply.body
    if expected == 403:
        assert reason(reply) == (403, "network_denied")


# --- workload identity ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_workload_is_allowed_by_its_certificate_without_a_token(
    ev: Evidence, transport: str
) -> None:
    seen = upstream_saw(ev.send(transport, "/ledger/entries", cert="workload"))
    assert seen["x-auth-workload"] == DEMO_WORKLOAD_ID
    assert seen["x-auth-rule"] == "billing-worker-reads-the-ledger"
    assert "x-auth-subject" not in seen


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_other_workloads_are_denied(ev: Evidence, transport: str) -> None:
    assert reason(ev.send(transport, "/ledger/entries", cert="other")) == (403, "workload_denied")


def test_a_client_sent_xfcc_is_replaced_by_envoy_over_mtls(ev: Evidence) -> None:
    fake = {"x-forwarded-client-cert": f"By=spiffe://x;URI={DEMO_WORKLOAD_ID}"}
    reply = ev.send("http", "/ledger/entries", fake, cert="other")
    assert reason(reply) == (403, "workload_denied")


def test_a_client_sent_xfcc_means_nothing_without_mtls(ev: Evidence) -> None:
    # ztauthz trusts XFCC (SANITIZE_SET is configured for the mTLS listener), yet over the
    # plain listener Envoy's default (SANITIZE) drops the client's header: no workload.
    fake = {"x-forwarded-client-cert": f"Hash=00;URI={DEMO_WORKLOAD_ID}"}
    assert reason(ev.send("http", "/ledger/entries", fake)) == (401, "token_missing")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_device_certificate_is_device_evidence(ev: Evidence, transport: str) -> None:
    seen = upstream_saw(ev.send(transport, "/kiosk/menu", cert="kiosk"))
    assert seen["x-auth-device-id"] == "kiosk-4"
    assert reason(ev.send(transport, "/kiosk/menu", cert="workload")) == (401, "token_missing")


# --- the decision log ----------------------------------------------------------------------------


def test_the_decision_log_records_the_evidence(ev: Evidence) -> None:
    headers = {
        **bearer(ev.token(device_id="laptop-7")),
        "x-device-token": ev.device_token(),
        "X-Forwarded-For": NL,
    }
    decision_id = upstream_saw(ev.send("http", "/reports/q3", headers))["x-auth-decision-id"]
    line = wait_for_line(ev.stack.log("ztauthz"), decision_id)
    assert (line["device_id"], line["client_ip"], line["country"]) == ("laptop-7", NL, "NL")
    workload_id = upstream_saw(ev.send("grpc", "/ledger/entries"))["x-auth-decision-id"]
    assert wait_for_line(ev.stack.log("ztauthz"), workload_id)["workload_id"] == DEMO_WORKLOAD_ID


def wait_for_line(log: Path, decision_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for raw in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if decision_id in raw and raw.startswith("{"):
                line: dict[str, Any] = json.loads(raw)
                if line.get("kind") == "decision":
                    return line
        assert time.monotonic() < deadline, f"no decision line for {decision_id}"
        time.sleep(0.05)


# --- certificate-bound tokens (RFC 8705 §3) ---------------------------------------------------


def x5t_s256(pair: CertPair) -> str:
    """base64url(SHA-256(DER)) of a client certificate: what a token's cnf["x5t#S256"] holds."""
    certificate = x509.load_pem_x509_certificate(pair.certificate.read_bytes())
    digest = hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_certificate_bound_token_is_allowed_with_its_certificate(
    ev: Evidence, transport: str
) -> None:
    token = ev.token(cnf={"x5t#S256": x5t_s256(ev.certs["workload"])})
    seen = upstream_saw(ev.send(transport, "/bound/x", bearer(token), cert="workload"))
    assert seen["x-auth-subject"] == "alice"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_certificate_bound_token_with_another_certificate_is_refused(
    ev: Evidence, transport: str
) -> None:
    token = ev.token(cnf={"x5t#S256": x5t_s256(ev.certs["workload"])})
    reply = ev.send(transport, "/bound/x", bearer(token), cert="other")
    assert reason(reply) == (401, "token_certificate_mismatch")
    assert reply.headers["www-authenticate"].startswith(
        'Bearer realm="ztauthz", error="invalid_token"'
    )


def test_a_certificate_bound_token_without_a_certificate_is_refused(ev: Evidence) -> None:
    token = ev.token(cnf={"x5t#S256": x5t_s256(ev.certs["workload"])})
    assert reason(ev.send("http", "/bound/x", bearer(token))) == (401, "token_certificate_mismatch")
    # A client's own XFCC naming the right certificate: Envoy drops it on the plain listener.
    digest = base64.urlsafe_b64decode(x5t_s256(ev.certs["workload"]) + "=").hex()
    forged = {**bearer(token), "x-forwarded-client-cert": f"Hash={digest}"}
    assert reason(ev.send("http", "/bound/x", forged)) == (401, "token_certificate_mismatch")
