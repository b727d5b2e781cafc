"""Test support for the identity package: keys, token minting and a real local IdP server.

``IdpServer`` is a threaded ``http.server`` on 127.0.0.1 (ephemeral port) serving whatever
replies a test sets (discovery document, JWKS, failures, delays, redirects), counting every
request per path, and able to stop mid-test to play an identity provider that went down.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from app.settings import Issuer, Jwks

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

NOW = 1_700_000_000.0


class FakeClock:
    """A clock callable that only moves when told to."""

    def __init__(self, start: float = NOW) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


# -- keys ----------------------------------------------------------------------------------


@cache
def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """A fresh RSA key per ``name`` (cached for the test session: generation is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@cache
def ec_key(name: str, curve: str = "P-256") -> ec.EllipticCurvePrivateKey:
    curves: dict[str, ec.EllipticCurve] = {
        "P-256": ec.SECP256R1(),
        "P-384": ec.SECP384R1(),
        "P-521": ec.SECP521R1(),
    }
    return ec.generate_private_key(curves[curve])


@cache
def ed_key(name: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_jwk(key: PrivateKey, kid: str | None, **members: Any) -> dict[str, Any]:
    """The public JWK of ``key`` with ``kid`` and any extra members (alg, use, ...)."""
    jwk: dict[str, Any]
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    jwk.update(members)
    return {k: v for k, v in jwk.items() if v is not None}


def private_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key, as_dict=True)
    jwk["kid"] = kid
    return jwk


def jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys)}


# -- tokens --------------------------------------------------------------------------------


def claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    """A valid payload for ``issuer`` at NOW; ``overrides`` set (or, with None, remove) claims."""
    payload: dict[str, Any] = {
        "iss": issuer,
        "sub": "user-1",
        "aud": "api",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def mint(
    key: PrivateKey, alg: str, payload: Mapping[str, Any], kid: str | None, **header: Any
) -> str:
    headers: dict[str, Any] = {"kid": kid, **header} if kid is not None else dict(header)
    return jwt.encode(dict(payload), key, algorithm=alg, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unsigned(header: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    """An ``alg: none`` style token: no signature at all."""
    return f"{b64json(dict(header))}.{b64json(dict(payload))}."


def signed_raw(key: rsa.RSAPrivateKey, header: bytes, payload: bytes) -> str:
    """An RS256 token over exactly these header and payload bytes (any JSON, or none): a
    valid signature, so only the parser can refuse it."""
    signing_input = f"{b64url(header)}.{b64url(payload)}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def hmac_forged(secret: bytes, header: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    """An HS256 token signed by hand (PyJWT refuses to use a PEM as an HMAC secret)."""
    signing_input = f"{b64json(dict(header))}.{b64json(dict(payload))}"
    mac = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


# -- configuration -------------------------------------------------------------------------


def make_issuer(url: str, **overrides: Any) -> Issuer:
    """An Issuer for ``url``; ``jwks=`` may be a dict of Jwks fields (durations in seconds)."""
    values: dict[str, Any] = {"issuer": url, "audiences": ["api"]}
    values.update(overrides)
    jwks = values.pop("jwks", {})
    # model_construct + model_copy: the tests run the cache with sub-second timings that the
    # configuration floors (refresh and kid-miss intervals of at least 1s) refuse from users.
    fields: dict[str, Any] = {
        name: value if name == "max_bytes" else timedelta(seconds=value)
        for name, value in jwks.items()
    }
    timings = Jwks.model_construct(None, **fields)
    return Issuer(**values).model_copy(update={"jwks": timings})


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``condition()`` holds, polling; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {within}s")


# -- the local identity provider -----------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    drip: float = 0.0  # seconds between body bytes (a trickling, slowloris-style server)
    content_length: bool = True


class IdpServer:
    """A real HTTP server on 127.0.0.1 that answers with configured replies and counts hits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: dict[str, Reply] = {}
        self._hits: Counter[str] = Counter()
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._running = False

    def start(self) -> None:
        self._thread.start()
        self._running = True

    def stop(self) -> None:
        """Stop answering: afterwards connections to the port are refused."""
        if self._running:
            self._running = False
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[IdpServer]:
        server = cls()
        server.start()
        try:
            yield server
        finally:
            server.stop()

    # configuration

    def set_reply(self, path: str, reply: Reply) -> None:
        with self._lock:
            self._replies[path] = reply

    def set_json(self, path: str, document: Any, status: int = 200, **options: Any) -> None:
        body = json.dumps(document).encode()
        self.set_reply(path, Reply(status=status, body=body, **options))

    def publish(self, keys: dict[str, Any], issuer: str | None = None, base: str = "") -> None:
        """Serve a discovery document for ``issuer`` (default: this server) and its JWKS."""
        self.set_json(
            f"{base}/.well-known/openid-configuration",
            {"issuer": issuer or self.url + base, "jwks_uri": f"{self.url}{base}/jwks"},
        )
        self.set_json(f"{base}/jwks", keys)

    def hits(self, path: str) -> int:
        with self._lock:
            return self._hits[path]

    # request handling

    def _reply_for(self, path: str) -> Reply | None:
        with self._lock:
            self._hits[path] += 1
            return self._replies.get(path)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (e.g. after its timeout) is expected in these tests


def _handler_for(server: IdpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            reply = server._reply_for(self.path.split("?", 1)[0])
            if reply is None:
                reply = Reply(status=404, body=b"not found")
            if reply.delay:
                time.sleep(reply.delay)
            self.send_response(reply.status)
            for name, value in {"content-type": "application/json", **reply.headers}.items():
                self.send_header(name, value)
            if reply.content_length:
                self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            if reply.drip:
                for i in range(len(reply.body)):
                    self.wfile.write(reply.body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(reply.drip)
            else:
                self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
