"""An independent SSF transmitter, written from the specifications alone (RFC 8417 SETs,
RFC 8935 push, OpenID SSF 1.0 metadata and subjects, CAEP 1.0 and RISC events): its own key,
its own ``/.well-known/ssf-configuration`` and JWKS, its own SET encoder and signer (ES256 with
``cryptography``, RFC 7518 §3.4), its own HTTP client (urllib). Nothing here comes from
ztauthz's dev helpers. ztauthz is configured as docs/continuous-access-evaluation.md says, and
the effects the documentation's table promises are observed through Envoy.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from app.dev.procs import ProcessGroup
from tests.integration.signals_support import Fleet, start_fleet

pytestmark = pytest.mark.integration

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
SSF = "https://schemas.openid.net/secevent/ssf/event-type/"
RECEIVER_AUD = "https://authz.example.com/ssf"
STREAM_ID = "f67e39a0a4d34d56b3aa1bc4cff0069f"
KID = "independent-1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def integer(value: int, size: int = 32) -> str:
    return b64url(value.to_bytes(size, "big"))


@dataclass
class Transmitter:
    """SSF transmitter: metadata, keys, SETs, push."""

    key: ec.EllipticCurvePrivateKey
    issuer: str = ""

    def jwks(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "x": integer(numbers.x),
                    "y": integer(numbers.y),
                    "kid": KID,
                    "use": "sig",
                    "alg": "ES256",
                }
            ]
        }

    def metadata(self) -> dict[str, Any]:  # SSF 1.0 §7.1
        return {
            "spec_version": "1_0",
            "issuer": self.issuer,
            "jwks_uri": self.issuer + "/keys",
            "delivery_methods_supported": ["urn:ietf:rfc:8935"],
            "critical_subject_members": ["user"],
        }

    def encode(self, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
        """RFC 7515 compact serialization, ES256: the raw R || S signature (RFC 7518 §3.4)."""
        protected = {"alg": "ES256", "typ": "secevent+jwt", "kid": KID, **(header or {})}
        signing_input = (
            b64url(json.dumps(protected).encode()) + "." + b64url(json.dumps(claims).encode())
        )
        der = self.key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def event(self, uri: str, payload: dict[str, Any], sub_id: dict[str, Any], **extra: Any) -> str:
        claims = {
            "iss": self.issuer,
            "aud": RECEIVER_AUD,
            "iat": int(time.time()),
            "jti": uuid.uuid4().hex,
            "txn": uuid.uuid4().hex,
            "sub_id": sub_id,
            "events": {uri: payload},
            **extra,
        }
        return self.encode(claims)


def serve_metadata(transmitter: Transmitter) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            documents = {
                "/.well-known/ssf-configuration": transmitter.metadata(),
                "/keys": transmitter.jwks(),
            }
            document = documents.get(self.path)
            body = json.dumps(document).encode()
            self.send_response(200 if document is not None else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    transmitter.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def push(url: str, token: str, body: str) -> tuple[int, dict[str, Any] | None]:
    """RFC 8935 §2.1."""
    request = urllib.request.Request(
        url,
        data=body.encode("ascii"),
        method="POST",
        headers={
            "Content-Type": "application/secevent+jwt",
            "Accept": "application/json",
            "Authorization": f"Bearer {token}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str]
) -> Iterator[tuple[Fleet, Transmitter, str, str]]:
    transmitter = Transmitter(ec.generate_private_key(ec.SECP256R1()))
    server = serve_metadata(transmitter)
    workdir = tmp_path_factory.mktemp("independent")
    token_file = workdir / "independent-push-token"
    push_token = uuid.uuid4().hex + uuid.uuid4().hex
    token_file.write_text(push_token, encoding="utf-8")

    def configure(config: dict[str, Any]) -> None:
        # The documented configuration: keys from the SSF configuration metadata, the token
        # issuer whose users it speaks for, a push token from a file.
        config["signals"]["transmitters"].append(
            {
                "name": "independent",
                "issuer": transmitter.issuer,
                "audiences": [RECEIVER_AUD],
                "configuration": True,
                "algorithms": ["ES256"],
                "issuers": [config["issuers"][0]["issuer"]],
                "stream_id": STREAM_ID,
                "push": {"token_file": str(token_file)},
            }
        )

    try:
        with ProcessGroup() as group:
            fleet = start_fleet(group, workdir, child_env, configure=configure)
            url = fleet.replicas[0].push_url.rsplit("/", 1)[0] + "/independent"
            yield fleet, transmitter, url, push_token
    finally:
        server.shutdown()
        server.server_close()


def status_reason(fleet: Fleet, token: str) -> tuple[int, str | None]:
    answer = fleet.replicas[0].get("/invoices", token)
    body = (
        answer.json()
        if answer.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    return answer.status_code, body.get("reason") if isinstance(body, dict) else None


def test_verification_event_is_acknowledged(setup: tuple[Fleet, Transmitter, str, str]) -> None:
    fleet, transmitter, url, token = setup
    sub_id = {"format": "opaque", "id": STREAM_ID}  # SSF §8.1.4.1
    assert push(url, token, transmitter.event(SSF + "verification", {}, sub_id))[0] == 202
    streams = fleet.replicas[0].readyz().json()["signals"]["streams"]
    assert streams["independent"]["verified_at"] is not None
    # a state the receiver never asked for (SSF §8.1.4.2)
    status, body = push(
        url, token, transmitter.event(SSF + "verification", {"state": "abc"}, sub_id)
    )
    assert (status, body and body["err"]) == (400, "invalid_state")


def test_complex_session_subject_ends_that_session(
    setup: tuple[Fleet, Transmitter, str, str],
) -> None:
    fleet, transmitter, url, token = setup
    user, sid = "u-" + uuid.uuid4().hex[:8], "s-" + uuid.uuid4().hex[:8]
    access = fleet.token(user, sid=sid)
    assert status_reason(fleet, access)[0] == 200
    sub_id = {
        "format": "complex",
        "user": {"format": "iss_sub", "iss": fleet.issuer_url, "sub": user},
        "session": {"format": "opaque", "id": sid},
        "tenant": {"format": "opaque", "id": "123456789"},
    }
    payload = {
        "initiating_entity": "policy",
        "reason_admin": {"en": "test"},
        "event_timestamp": int(time.time()),
    }
    assert push(url, token, transmitter.event(CAEP + "session-revoked", payload, sub_id))[0] == 202
    assert status_reason(fleet, access) == (401, "session_revoked")


def test_account_disabled_by_email(setup: tuple[Fleet, Transmitter, str, str]) -> None:
    fleet, transmitter, url, token = setup
    user = "u-" + uuid.uuid4().hex[:8]
    access = fleet.token(user, email=f"{user}@Example.COM")
    assert status_reason(fleet, access)[0] == 200
    sub_id = {"format": "email", "email": f"{user}@example.com"}
    assert (
        push(
            url,
            token,
            transmitter.event(RISC + "account-disabled", {"reason": "hijacking"}, sub_id),
        )[0]
        == 202
    )
    assert status_reason(fleet, access) == (401, "account_disabled")


def test_device_out_of_compliance(setup: tuple[Fleet, Transmitter, str, str]) -> None:
    fleet, transmitter, url, token = setup
    device = "d-" + uuid.uuid4().hex[:8]
    access = fleet.token("u-" + uuid.uuid4().hex[:8], device_id=device)
    assert status_reason(fleet, access)[0] == 200
    sub_id = {
        "format": "complex",
        "device": {"format": "iss_sub", "iss": transmitter.issuer, "sub": device},
    }
    payload = {
        "current_status": "not-compliant",
        "previous_status": "compliant",
        "event_timestamp": int(time.time()),
    }
    assert (
        push(url, token, transmitter.event(CAEP + "device-compliance-change", payload, sub_id))[0]
        == 202
    )
    assert status_reason(fleet, access) == (403, "device_noncompliant")


def test_sets_outside_the_profile_are_refused(setup: tuple[Fleet, Transmitter, str, str]) -> None:
    fleet, transmitter, url, token = setup
    user = "u-" + uuid.uuid4().hex[:8]
    access = fleet.token(user)
    sub_id = {"format": "iss_sub", "iss": fleet.issuer_url, "sub": user}
    revoked = CAEP + "session-revoked"
    cases = [
        (
            transmitter.event(revoked, {}, sub_id, exp=int(time.time()) + 60),
            "invalid_request",
        ),  # SSF §4.1.7
        (transmitter.event(revoked, {}, sub_id, aud="https://someone.else"), "invalid_audience"),
        (
            transmitter.encode(
                {
                    "iss": transmitter.issuer,
                    "aud": RECEIVER_AUD,
                    "iat": int(time.time()),
                    "jti": uuid.uuid4().hex,
                    "sub_id": sub_id,
                    "events": {revoked: {}},
                },
                header={"typ": "JWT"},
            ),
            "invalid_request",
        ),  # RFC 8417 §2.3
        (transmitter.event(revoked, {}, sub_id)[:-6] + "AAAAAA", "invalid_key"),
        # a complex subject with a critical member the receiver cannot use (SSF §3.6)
        (
            transmitter.event(
                revoked,
                {},
                {"format": "complex", "user": {"format": "phone_number", "phone_number": "+1 555"}},
            ),
            "invalid_request",
        ),
    ]
    for body, code in cases:
        status, answer = push(url, token, body)
        assert (status, answer and answer["err"]) == (400, code)
    assert push(url, "wrong-token", transmitter.event(revoked, {}, sub_id)) == (
        400,
        {"err": "authentication_failed", "description": "unknown stream or credentials"},
    )
    assert status_reason(fleet, access)[0] == 200
