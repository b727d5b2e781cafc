"""ztauthz's Envoy messages (app/protos/envoy_ext_authz.proto) against the bytes real Envoy sends.

A recording Authorization server stands behind Envoy (the shipped gRPC bootstrap, with an mTLS
listener, route metadata, per-route context extensions and dynamic metadata added, as an operator
would) and keeps each CheckRequest as raw bytes. Decoded with ztauthz's CheckRequest, every
declared field holds what the request carried, and every field Envoy sent that ztauthz does not
declare is one the .proto lists as left out: a wrong field number or wire type shows up as a
missing value or as an unexpected unknown field. The recorder's answers, written with ztauthz's
CheckResponse, are what the client and the upstream then see (allow with a header set; deny with
status, headers and body).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import grpc
import pytest
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from app.dev.envoy import (
    SHIPPED_ENVOY_GRPC_CONFIG,
    DownstreamTls,
    envoy_command,
    render_envoy_config,
)
from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import Reply, Stack, tls_request
from app.protos import envoy_ext_authz_pb2 as pb
from app.transport import grpc_wire
from app.transport.grpc import AUTHORIZATION_SERVICE, CHECK
from tests.integration.pki_support import WORKLOAD_SPIFFE_ID, Pair, Pki, make_pki

pytestmark = pytest.mark.integration

PACKAGE = "ztauthz.envoy.auth.v3."
# The fields of Envoy's messages that the .proto leaves out (by number): the only unknown
# fields a CheckRequest from Envoy may carry.
LEFT_OUT: dict[str, set[int]] = {
    "AttributeContext": {12},  # tls_session
    "AttributeContext.Peer": {2, 3},  # service, labels
    "AttributeContext.Request": {1},  # time
    "AttributeContext.HttpRequest": {7, 8, 9, 11, 12},  # query, fragment, size, body, raw_body
    "Address": {2, 3},  # pipe, envoy_internal_address
    "SocketAddress": {1, 4, 5, 6, 7},  # protocol, named_port, resolver_name, ...
    "Metadata": {2},  # typed_filter_metadata
}
DYNAMIC = "ztauthz.capture"  # a dynamic metadata namespace, set by Envoy's set_metadata filter
BEARER = "Bearer captured-token"
ALLOW = pb.CheckResponse(
    status={"code": 0},
    ok_response=pb.OkHttpResponse(
        headers=[
            pb.HeaderValueOption(
                header=pb.HeaderValue(key="x-auth-subject", value="captured"),
                append_action=pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        ],
        headers_to_remove=["x-auth-groups"],
    ),
)
DENY = pb.CheckResponse(
    status={"code": 16, "message": "token_invalid"},  # UNAUTHENTICATED
    denied_response=pb.DeniedHttpResponse(
        status=pb.HttpStatus(code=401),
        headers=[
            pb.HeaderValueOption(
                header=pb.HeaderValue(key="www-authenticate", value='Bearer realm="capture"'),
                append_action=pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            ),
            pb.HeaderValueOption(header=pb.HeaderValue(key="content-type", value="text/plain")),
        ],
        body="denied by the recorder",
    ),
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Recorder:
    """Envoy's Authorization/Check, keeping the request bytes and answering from a script."""

    def __init__(self, answers: list[pb.CheckResponse]) -> None:
        self.requests: list[bytes] = []
        self._answers = answers

    async def check(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.requests.append(request)
        return self._answers[len(self.requests) - 1].SerializeToString()


def _operator_config(config: dict[str, Any], *, raw_headers: bool) -> dict[str, Any]:
    """Route metadata, context extensions and dynamic metadata, as an operator would add them."""
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    typed = hcm["typed_config"]
    route = typed["route_config"]["virtual_hosts"][0]["routes"][0]
    route["metadata"] = {"filter_metadata": {"ztauthz": {"tier": "gold", "labels": ["pci"]}}}
    route["typed_per_filter_config"] = {
        "envoy.filters.http.ext_authz": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
            "check_settings": {"context_extensions": {"tenant": "acme"}},
        }
    }
    filters = typed["http_filters"]
    (at,) = [i for i, f in enumerate(filters) if f["name"] == "envoy.filters.http.ext_authz"]
    filters.insert(
        at,
        {
            "name": "envoy.filters.http.set_metadata",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config",
                "metadata": [{"metadata_namespace": DYNAMIC, "value": {"stage": "capture"}}],
            },
        },
    )
    ext_authz = filters[at + 1]["typed_config"]
    ext_authz["metadata_context_namespaces"] = [DYNAMIC]
    if raw_headers:
        ext_authz["encode_raw_headers"] = True
    return config


def _https_get(port: int, pki: Pki, path: str, headers: dict[str, str], client: Pair) -> Reply:
    return tls_request(port, pki.ca, "GET", path, headers, (client.certificate, client.key))


def _unknown(message: Message) -> Iterator[tuple[str, int]]:
    """(message name, field number) of every unknown field, in ``message`` and below."""
    unknown = UnknownFieldSet(message)
    for index in range(len(unknown)):
        yield message.DESCRIPTOR.full_name.removeprefix(PACKAGE), unknown[index].field_number
    for descriptor, value in message.ListFields():
        kind = descriptor.message_type
        # Maps hold strings or google.protobuf.Struct; google.rpc.Status is not ours either.
        if kind is None or kind.GetOptions().map_entry or not kind.full_name.startswith(PACKAGE):
            continue
        for item in value if descriptor.is_repeated else [value]:
            yield from _unknown(item)


@pytest.mark.parametrize("raw_headers", [False, True], ids=["headers", "header-map"])
async def test_what_envoy_sends_is_what_ztauthz_declares(
    grpc_stack: Stack, pki: Pki, tmp_path: Path, raw_headers: bool
) -> None:
    recorder = Recorder([ALLOW, DENY])
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                AUTHORIZATION_SERVICE, {CHECK: grpc.unary_unary_rpc_method_handler(recorder.check)}
            ),
        )
    )
    authz_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        listen, admin = free_port(), free_port()
        config = render_envoy_config(
            SHIPPED_ENVOY_GRPC_CONFIG,
            listen_port=listen,
            admin_port=admin,
            authz_port=authz_port,
            upstream_port=grpc_stack.ports.upstream,
            tls=DownstreamTls(pki.server.certificate, pki.server.key, client_ca=pki.ca),
        )
        path = tmp_path / "envoy.yaml"
        path.write_text(yaml.safe_dump(_operator_config(config, raw_headers=raw_headers)))
        envoy = ManagedProcess(
            "envoy-capture",
            envoy_command(path),
            log_path=tmp_path / "envoy.log",
            ready=HttpReady(f"http://127.0.0.1:{admin}/ready"),
        )
        sent = {"Authorization": BEARER, "X-Forwarded-For": "203.0.113.9"}
        with ProcessGroup() as group:
            await asyncio.to_thread(group.start, envoy)
            allowed = await asyncio.to_thread(
                _https_get, listen, pki, "/invoices?page=2", sent, pki.workload
            )
            denied = await asyncio.to_thread(
                _https_get, listen, pki, "/invoices/7", sent, pki.workload
            )
    finally:
        await server.stop(0)

    # The answers, as the client and the upstream see them.
    assert allowed.status == 200, allowed.body
    upstream = allowed.json()["headers"]
    assert upstream["x-auth-subject"] == "captured"
    assert (denied.status, denied.body) == (401, b"denied by the recorder")
    assert denied.headers["www-authenticate"] == 'Bearer realm="capture"'
    assert denied.headers["content-type"] == "text/plain"

    # The requests, as Envoy encoded them.
    assert len(recorder.requests) == 2
    request = pb.CheckRequest.FromString(recorder.requests[0])
    left_out = {(name, number) for name, numbers in LEFT_OUT.items() for number in numbers}
    assert set(_unknown(request)) - left_out == set(), json_format.MessageToDict(request)
    attributes = request.attributes
    source, destination = attributes.source, attributes.destination
    assert source.address.socket_address.address == "127.0.0.1"
    assert source.address.socket_address.port_value not in (0, listen)
    assert source.principal == WORKLOAD_SPIFFE_ID
    assert unquote(source.certificate).strip() == pki.workload.pem().strip()
    assert destination.address.socket_address.address == "127.0.0.1"
    assert destination.address.socket_address.port_value == listen
    assert destination.principal  # Envoy's own certificate's SAN
    http = attributes.request.http
    assert (http.method, http.path, http.host) == ("GET", "/invoices?page=2", f"127.0.0.1:{listen}")
    assert (http.scheme, http.protocol) == ("https", "HTTP/1.1")
    assert http.id.isdigit()  # Envoy's stream id (x-request-id travels as a header)
    if raw_headers:
        assert not http.headers
        by_name = {h.key: h.raw_value for h in http.header_map.headers}
        assert by_name["authorization"] == BEARER.encode()
        assert by_name["x-request-id"] == upstream["x-request-id"].encode()
    else:
        assert not http.header_map.headers
        assert http.headers["authorization"] == BEARER
        assert http.headers["x-request-id"] == upstream["x-request-id"]
    assert dict(attributes.context_extensions) == {"tenant": "acme"}
    route = json_format.MessageToDict(attributes.route_metadata_context.filter_metadata["ztauthz"])
    assert route == {"tier": "gold", "labels": ["pci"]}
    dynamic = json_format.MessageToDict(attributes.metadata_context.filter_metadata[DYNAMIC])
    assert dynamic == {"stage": "capture"}

    # And what ztauthz makes of it.
    ctx = grpc_wire.to_context(request)
    assert (ctx.method, ctx.host, ctx.path) == ("GET", f"127.0.0.1:{listen}", "/invoices?page=2")
    assert ctx.headers["authorization"] == BEARER
    assert ctx.headers["x-forwarded-for"].startswith("203.0.113.9")
    assert ctx.source_address == "127.0.0.1"
    assert ctx.peer_principal == WORKLOAD_SPIFFE_ID
    assert dict(ctx.context_extensions) == {"tenant": "acme"}
    assert ctx.route_metadata["ztauthz"]["labels"] == ("pci",)
