"""Envoy gRPC ext_authz messages <-> RequestContext / Rendered (app/transport/grpc_wire.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import json_format
from google.rpc import code_pb2

from app.decision import Decision, StepUp
from app.identity.principal import Principal
from app.reasons import Reason
from app.request import make_context
from app.settings import Response
from app.transport.grpc_wire import EMPTY_CONTEXT, rpc_code, to_check_response, to_context
from app.transport.http_wire import response_headers
from app.transport.render import HEADERS_TO_REMOVE, IDENTITY_HEADERS, render

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
PEM = "-----BEGIN%20CERTIFICATE-----%0AMIIB...%0A-----END%20CERTIFICATE-----%0A"
SPIFFE = "spiffe://example.org/ns/default/sa/billing"


def check_request(**attributes: Any) -> Any:
    """A CheckRequest from the JSON form Envoy documents (proto field names)."""
    return json_format.ParseDict({"attributes": attributes}, external_auth_pb2.CheckRequest())


def http(**fields: Any) -> dict[str, Any]:
    return {"request": {"http": {"method": "GET", "host": "api.example.com", **fields}}}


# --- CheckRequest -> RequestContext -----------------------------------------------------------


def test_http_attributes_map_like_the_http_transport() -> None:
    ctx = to_context(
        check_request(
            **http(
                method="delete",
                path="/invoices/7?x=1&y=%20",
                headers={"Authorization": "Bearer t", "Cookie": "a=1", "x-request-id": "r"},
            )
        )
    )
    assert (ctx.method, ctx.host, ctx.path, ctx.transport) == (
        "DELETE",
        "api.example.com",
        "/invoices/7?x=1&y=%20",
        "grpc",
    )
    assert dict(ctx.headers) == {
        "authorization": "Bearer t",
        "cookie": "a=1",
        "x-request-id": "r",
        "host": "api.example.com",
    }
    with pytest.raises(TypeError):
        ctx.headers["x-auth-subject"] = "admin"  # type: ignore[index]


def test_pseudo_headers_are_fields_not_headers_and_host_is_the_http_host() -> None:
    ctx = to_context(
        check_request(
            **http(
                path="/p",
                headers={":path": "/other", ":authority": "evil", ":method": "POST", "host": "x"},
            )
        )
    )
    assert dict(ctx.headers) == {"host": "api.example.com"}
    assert (ctx.method, ctx.path) == ("GET", "/p")


def test_raw_header_map_is_read_when_envoy_sends_it() -> None:
    # encode_raw_headers: true moves headers to header_map with bytes values; repeats are joined.
    ctx = to_context(
        check_request(
            **http(
                path="/",
                header_map={
                    "headers": [
                        {"key": "Authorization", "raw_value": "QmVhcmVyIHQ="},  # "Bearer t"
                        {"key": "x-b3-flags", "value": "1"},
                        {"key": "cookie", "raw_value": "YT0x"},  # "a=1"
                        {"key": "Cookie", "raw_value": "Yj0y"},  # "b=2"
                    ]
                },
            )
        )
    )
    assert dict(ctx.headers) == {
        "authorization": "Bearer t",
        "x-b3-flags": "1",
        "cookie": "a=1,b=2",
        "host": "api.example.com",
    }


def test_connection_facts_come_from_envoy_not_from_headers() -> None:
    ctx = to_context(
        check_request(
            source={
                "address": {"socket_address": {"address": "10.1.2.3", "port_value": 51234}},
                "principal": SPIFFE,
                "certificate": PEM,
            },
            context_extensions={"tenant": "acme", "tier": "gold"},
            route_metadata_context={
                "filter_metadata": {
                    "ztauthz": {"labels": ["pci", {"zone": "eu"}], "owner": {"team": "billing"}}
                }
            },
            **http(path="/", headers={"x-forwarded-for": "203.0.113.9"}),
        )
    )
    assert ctx.source_address == "10.1.2.3"  # the socket peer, not X-Forwarded-For
    assert ctx.headers["x-forwarded-for"] == "203.0.113.9"
    assert ctx.peer_principal == SPIFFE
    assert ctx.peer_certificate == PEM  # as Envoy sends it: URL-encoded PEM
    assert dict(ctx.context_extensions) == {"tenant": "acme", "tier": "gold"}
    metadata = ctx.route_metadata["ztauthz"]
    assert metadata["labels"] == ("pci", MappingProxyType({"zone": "eu"}))
    owner = metadata["owner"]
    assert isinstance(owner, Mapping) and owner["team"] == "billing"
    with pytest.raises(TypeError):
        owner["team"] = "other"  # type: ignore[index]


@pytest.mark.parametrize(
    "source",
    [
        {},
        {"address": {"pipe": {"path": "/run/envoy.sock"}}},
        {"address": {"socket_address": {"address": ""}}},
    ],
    ids=["none", "pipe", "empty"],
)
def test_no_socket_address_means_no_source_address(source: dict[str, Any]) -> None:
    ctx = to_context(check_request(source=source, **http(path="/")))
    assert ctx.source_address is None
    assert ctx.peer_principal is None and ctx.peer_certificate is None


def test_the_http_transport_leaves_the_grpc_only_facts_empty() -> None:
    ctx = make_context("GET", "h", "/", {})
    assert ctx.source_address is None and ctx.peer_principal is None
    assert ctx.peer_certificate is None
    assert not ctx.context_extensions and not ctx.route_metadata


@pytest.mark.parametrize(
    "request_",
    [external_auth_pb2.CheckRequest(), check_request(source={"principal": SPIFFE})],
    ids=["empty", "no-http-attributes"],
)
def test_a_malformed_check_request_maps_to_an_empty_request(request_: Any) -> None:
    ctx = to_context(request_)
    assert (ctx.method, ctx.host, ctx.path, dict(ctx.headers)) == ("", "", "", {})
    assert (EMPTY_CONTEXT.method, EMPTY_CONTEXT.path) == ("", "")


# --- Rendered -> CheckResponse ----------------------------------------------------------------

SETTINGS = Response()
ALICE = Principal(
    issuer="https://idp.example.com",
    subject="alice",
    groups=frozenset({"finance"}),
    scopes=frozenset({"invoices:read"}),
    audience=("https://api.example.com",),
    expires_at=2_000_000_000,
    issued_at=1_999_999_000,
    claims=MappingProxyType({}),
)


def _headers(options: Any) -> dict[str, str]:
    assert all(o.append_action == OVERWRITE for o in options)
    return {o.header.key: o.header.value for o in options}


@pytest.mark.parametrize(
    "decision",
    [
        Decision(True, Reason.ALLOWED, "d1", "v1", "invoices-read", "p", ALICE),
        Decision(True, Reason.ALLOWED_ANONYMOUS, "d2", "v1", "public-read", "p"),
    ],
    ids=["authenticated", "anonymous"],
)
def test_allow_sets_identity_headers_and_removes_every_other_identity_header(
    decision: Decision,
) -> None:
    rendered = render(decision, SETTINGS)
    response = to_check_response(rendered, decision.reason.value)
    assert response.status.code == code_pb2.OK
    assert response.WhichOneof("http_response") == "ok_response"
    ok = response.ok_response
    set_here = _headers(ok.headers)
    removed = list(ok.headers_to_remove)
    assert set_here == rendered.headers
    assert set(set_here) | set(removed) == set(IDENTITY_HEADERS)
    assert not set(set_here) & set(removed)
    # The same answer the HTTP transport gives, in gRPC's fields.
    http_headers = response_headers(rendered)
    assert http_headers.pop(HEADERS_TO_REMOVE, "") == ",".join(removed)
    assert http_headers == set_here


@pytest.mark.parametrize(
    ("reason", "status", "code"),
    [
        (Reason.TOKEN_MISSING, 401, code_pb2.UNAUTHENTICATED),
        (Reason.TOKEN_EXPIRED, 401, code_pb2.UNAUTHENTICATED),
        (Reason.DENIED_BY_RULE, 403, code_pb2.PERMISSION_DENIED),
        (Reason.NO_MATCHING_RULE, 403, code_pb2.PERMISSION_DENIED),
        (Reason.PATH_REJECTED, 400, code_pb2.INVALID_ARGUMENT),
    ],
)
def test_deny_carries_the_http_answer(reason: Reason, status: int, code: int) -> None:
    rendered = render(Decision(False, reason, "d3", "v1"), SETTINGS)
    response = to_check_response(rendered, reason.value)
    assert response.status.code == code
    assert response.status.message == reason.value
    assert response.WhichOneof("http_response") == "denied_response"
    denied = response.denied_response
    assert denied.status.code == status
    assert _headers(denied.headers) == rendered.headers
    assert json.loads(denied.body) == {
        "decision": "deny",
        "reason": reason.value,
        "decision_id": "d3",
    }
    if status == 401:
        assert _headers(denied.headers)["www-authenticate"].startswith('Bearer realm="ztauthz"')


def test_the_answer_survives_the_wire() -> None:
    rendered = render(Decision(False, Reason.TOKEN_MISSING, "d4", "v1"), SETTINGS)
    response = to_check_response(rendered, "token_missing")
    parsed = external_auth_pb2.CheckResponse.FromString(response.SerializeToString())
    assert parsed == response
    assert parsed.denied_response.body.encode() == rendered.body


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (200, code_pb2.OK),
        (400, code_pb2.INVALID_ARGUMENT),
        (401, code_pb2.UNAUTHENTICATED),
        (403, code_pb2.PERMISSION_DENIED),
        (404, code_pb2.PERMISSION_DENIED),
        (429, code_pb2.PERMISSION_DENIED),
        (500, code_pb2.UNAVAILABLE),
        (503, code_pb2.UNAVAILABLE),
    ],
)
def test_only_200_is_ok(status: int, code: int) -> None:
    assert rpc_code(status) == code


def test_a_step_up_challenge_is_the_same_over_grpc() -> None:
    decision = Decision(
        False,
        Reason.INSUFFICIENT_USER_AUTHENTICATION,
        "d5",
        "v1",
        principal=ALICE,
        step_up=StepUp(("urn:acr:high",), 600),
    )
    rendered = render(decision, SETTINGS)
    response = to_check_response(rendered, decision.reason.value)
    assert response.status.code == code_pb2.UNAUTHENTICATED
    denied = response.denied_response
    assert denied.status.code == 401
    challenge = _headers(denied.headers)["www-authenticate"]
    assert challenge == rendered.headers["www-authenticate"]
    assert 'error="insufficient_user_authentication"' in challenge
    assert 'acr_values="urn:acr:high"' in challenge and "max_age=600" in challenge


def test_envoys_trace_context_in_the_call_metadata_replaces_the_clients() -> None:
    client = "00-11111111111111111111111111111111-2222222222222222-01"
    envoy = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    request = check_request(**http(path="/", headers={"traceparent": client, "cookie": "a=1"}))
    metadata: list[tuple[str, str | bytes]] = [
        ("traceparent", envoy),
        ("x-b3-sampled", "1"),
        ("cookie", "forged=1"),  # only trace context is taken from the metadata
        ("trace-bin", b"\x00\x01"),
    ]
    ctx = to_context(request, metadata)
    assert ctx.headers["traceparent"] == envoy
    assert ctx.headers["x-b3-sampled"] == "1"
    assert ctx.headers["cookie"] == "a=1"
    assert "trace-bin" not in ctx.headers
    assert to_context(request).headers["traceparent"] == client
