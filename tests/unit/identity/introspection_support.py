"""Test support for introspection: a scripted authorization server behind httpx.MockTransport.

``FakeAuthorizationServer`` answers RFC 7662 questions from a table (token -> answer), records
every request (so tests can check client authentication and count questions), and can hold
answers behind a gate (concurrency tests), fail, or answer slowly.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

import httpx

from app.identity.introspection import Introspector, OutcomeObserver
from app.identity.introspection_client import ClientCredentials, IntrospectionClient
from app.settings import Issuer
from tests.unit.identity.identity_support import NOW, FakeClock

ISSUER = "https://as.example"
ENDPOINT = "https://as.example/introspect"
SECRET = "s3cr3t+with%odd:chars"


def introspecting_issuer(**introspection: Any) -> Issuer:
    """An Issuer with introspection (client_secret_basic from an env variable by default)."""
    settings: dict[str, Any] = {
        "endpoint": ENDPOINT,
        "client_id": "ztauthz",
        "auth": "client_secret_basic",
        "client_secret_env": "UNUSED_IN_UNIT_TESTS",
    }
    settings.update(introspection)
    return Issuer.model_validate(
        {"issuer": ISSUER, "audiences": ["api"], "introspection": settings}
    )


def active(**overrides: Any) -> dict[str, Any]:
    """An RFC 7662 answer for an active token of ISSUER at NOW."""
    answer: dict[str, Any] = {
        "active": True,
        "iss": ISSUER,
        "sub": "user-1",
        "aud": "api",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "scope": "read write",
        "client_id": "app",
        "token_type": "Bearer",
    }
    answer.update(overrides)
    return {k: v for k, v in answer.items() if v is not None}


class FakeAuthorizationServer:
    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.requests: list[httpx.Request] = []
        self.status = 200
        self.body: bytes | None = None  # overrides the JSON answer
        self.headers: dict[str, str] = {}
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None
        self.discovery: dict[str, Any] | None = None

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def questions(self) -> list[dict[str, list[str]]]:
        return [
            parse_qs(r.content.decode())
            for r in self.requests
            if r.url.path != "/.well-known/openid-configuration"
        ]

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200 if self.discovery else 404, json=self.discovery or {})
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if self.body is not None:
            return httpx.Response(self.status, content=self.body, headers=self.headers)
        form = parse_qs(request.content.decode())
        token = form.get("token", [""])[0]
        return httpx.Response(self.status, json=self.answers.get(token, {"active": False}))


def make_introspector(
    server: FakeAuthorizationServer,
    issuer: Issuer | None = None,
    clock: FakeClock | None = None,
    on_outcome: OutcomeObserver | None = None,
    credentials: ClientCredentials | None = None,
) -> Introspector:
    issuer = issuer if issuer is not None else introspecting_issuer()
    assert issuer.introspection is not None
    creds = credentials or ClientCredentials(issuer.introspection.client_id, secret=SECRET)
    client = IntrospectionClient(issuer.issuer, issuer.introspection, creds, server.transport())
    discovery = httpx.AsyncClient(transport=server.transport())
    return Introspector(issuer, client, discovery, clock or FakeClock(), on_outcome)
