"""One integration suite, two transports: what differs between HTTP and gRPC ext_authz.

Every through-Envoy test runs once per transport (the ``transport`` fixture in conftest.py):

* ``http``: ``ztauthz serve`` with its HTTP check listener, Envoy running deploy/envoy/envoy.yaml;
* ``grpc``: ``ztauthz serve`` with the gRPC listener *instead of* HTTP (on the stack's check port,
  set through ZTAUTHZ_* variables by ``app.dev.envoy.transport_env``), Envoy running
  deploy/envoy/envoy-grpc.yaml.

Tests talk to Envoy and assert the same expectations for both. The few that talk to ztauthz
directly use ``direct_check``, which asks over the transport's own wire and returns the answer in
one shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

from app.dev.envoy import Transport
from app.dev.stack import http_request
from app.protos import envoy_ext_authz_pb2 as pb
from app.transport.grpc import check_method
from app.transport.render import HEADERS_TO_REMOVE


@dataclass(frozen=True, slots=True)
class Answer:
    """ztauthz's answer in one shape: ``status`` is the HTTP status Envoy would act on (or the
    failed RPC's code name over gRPC, with ``reason`` from its details)."""

    status: int | str
    headers: Mapping[str, str]
    headers_to_remove: tuple[str, ...]
    body: Any

    @property
    def reason(self) -> str | None:
        return self.body.get("reason") if isinstance(self.body, dict) else None


def direct_check(
    transport: Transport,
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str],
    *,
    host: str = "api.example.com",
) -> Answer:
    """Ask ztauthz on ``port`` itself, as Envoy would over ``transport`` (no Envoy between)."""
    if transport == "http":
        reply = http_request(port, method, "/check" + path, {"Host": host, **headers})
        removed = reply.headers.get(HEADERS_TO_REMOVE, "")
        shown = {k: v for k, v in reply.headers.items() if k != HEADERS_TO_REMOVE}
        return Answer(reply.status, shown, tuple(h for h in removed.split(",") if h), reply.json())
    request = json_format.ParseDict(
        {
            "attributes": {
                "source": {"address": {"socket_address": {"address": "127.0.0.1"}}},
                "request": {
                    "http": {
                        "method": method,
                        "host": host,
                        "path": path,
                        "headers": {k.lower(): v for k, v in headers.items()},
                    }
                },
            }
        },
        pb.CheckRequest(),
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = check_method(channel)(request, timeout=10)
        except grpc.RpcError as failed:
            return Answer(failed.code().name, {}, (), {"reason": failed.details()})
    if response.WhichOneof("http_response") == "ok_response":
        ok = response.ok_response
        sent = {o.header.key: o.header.value for o in ok.headers}
        return Answer(200, sent, tuple(ok.headers_to_remove), None)
    denied = response.denied_response
    sent = {o.header.key: o.header.value for o in denied.headers}
    return Answer(denied.status.code, sent, (), json.loads(denied.body))
