"""Envoy's gRPC ext_authz messages <-> ztauthz values. Pure functions, no I/O.

``CheckRequest`` -> ``RequestContext`` (the same one the HTTP transport builds, plus the
connection facts only gRPC carries) and ``Rendered`` -> ``CheckResponse``. The mapping is total:
a CheckRequest missing its HTTP attributes maps to an empty method, host and path, which the
pipeline refuses (400 ``path_rejected``), so a malformed request is still decided, logged and
denied like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from app.request import RequestContext, make_context
from app.transport.render import Rendered

CheckRequest = Any  # envoy.service.auth.v3.CheckRequest (xds-protos ships no type stubs)
CheckResponse = Any  # envoy.service.auth.v3.CheckResponse

TRANSPORT = "grpc"

# The gRPC status Envoy reads: OK allows, anything else denies with the DeniedHttpResponse.
_RPC_CODE: Mapping[int, int] = MappingProxyType(
    {
        200: code_pb2.OK,
        400: code_pb2.INVALID_ARGUMENT,
        401: code_pb2.UNAUTHENTICATED,
        403: code_pb2.PERMISSION_DENIED,
    }
)
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

# Trace context Envoy puts in the gRPC call's metadata when it traces the ext_authz call. Over
# HTTP, Envoy injects the same headers into the check request itself (replacing the client's),
# so they take the client's place here too, and the check span gets the same parent.
TRACE_METADATA = (
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
)

# What a CheckRequest without HTTP attributes maps to: refused by the pipeline (path_rejected).
EMPTY_CONTEXT = make_context("", "", "", {}, TRANSPORT)


def to_context(
    request: CheckRequest, metadata: Iterable[tuple[str, str | bytes]] = ()
) -> RequestContext:
    """The RequestContext for one CheckRequest (and the call's ``metadata``, for the trace
    context of Envoy's own ext_authz span); never raises on missing fields."""
    attributes = request.attributes
    http = attributes.request.http
    source = attributes.source
    headers = _headers(http)
    for key, value in metadata:
        if key.lower() in TRACE_METADATA and isinstance(value, str):
            headers[key.lower()] = value
    return make_context(
        method=http.method,
        host=http.host,
        path=http.path,  # the original path, query included, after Envoy's normalization
        headers=headers,
        transport=TRANSPORT,
        source_address=_ip(source),
        peer_certificate=source.certificate,
        peer_principal=source.principal,
        context_extensions=dict(attributes.context_extensions),
        route_metadata=_metadata(attributes.route_metadata_context),
        scheme=http.scheme or None,  # DPoP's htu (RFC 9449 §4.3): the scheme Envoy saw
    )


def _headers(http: Any) -> dict[str, str]:
    """Request headers, lower-cased, as the HTTP transport sees them: the allow-listed headers
    plus ``host``, without HTTP/2 pseudo-headers (``:path`` and friends are the method, host and
    path fields). Envoy fills ``header_map`` instead of ``headers`` when ``encode_raw_headers``
    is on; repeated headers are joined with ',' as Envoy does."""
    pairs: list[tuple[str, str]]
    if len(http.header_map.headers):
        pairs = [
            (h.key, h.raw_value.decode("latin-1") if h.raw_value else h.value)
            for h in http.header_map.headers
        ]
    else:
        pairs = list(http.headers.items())
    headers: dict[str, str] = {}
    for key, value in pairs:
        name = key.lower()
        if name.startswith(":") or name == "host":
            continue
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    if http.host:
        # As over HTTP, where the check request carries the original Host header.
        headers["host"] = http.host
    return headers


def _ip(peer: Any) -> str | None:
    """The peer's IP address (no port); None for a pipe or when Envoy sent none."""
    if not peer.HasField("address") or not peer.address.HasField("socket_address"):
        return None
    return str(peer.address.socket_address.address) or None


def _freeze(value: object) -> object:
    if isinstance(value, dict):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _metadata(metadata: Any) -> dict[str, Mapping[str, object]]:
    """``filter_metadata`` as namespace -> read-only JSON object."""
    out: dict[str, Mapping[str, object]] = {}
    for namespace, struct in metadata.filter_metadata.items():
        frozen = _freeze(json_format.MessageToDict(struct))
        if isinstance(frozen, Mapping):
            out[str(namespace)] = frozen
    return out


def _header_options(headers: Mapping[str, str]) -> list[Any]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE
        )
        for name, value in headers.items()
    ]


def rpc_code(status: int) -> int:
    """The google.rpc code for an HTTP status: OK only for 200; 5xx means "cannot decide"."""
    if status >= 500:
        return int(code_pb2.UNAVAILABLE)
    return int(_RPC_CODE.get(status, code_pb2.PERMISSION_DENIED))


def to_check_response(rendered: Rendered, reason: str) -> CheckResponse:
    """The CheckResponse for a rendered decision (``reason`` is its stable reason code).

    Allow: OK, the identity headers to set (overwriting any of the same name) and the identity
    headers ztauthz did not set in ``headers_to_remove``. Deny: the HTTP status, headers
    (WWW-Authenticate, content-type, ...) and JSON body the HTTP transport would send.
    """
    status = status_pb2.Status(code=rpc_code(rendered.status), message=reason)
    if rendered.status == 200:
        return external_auth_pb2.CheckResponse(
            status=status,
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=_header_options(rendered.headers),
                headers_to_remove=list(rendered.headers_to_remove),
            ),
        )
    return external_auth_pb2.CheckResponse(
        status=status,
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=rendered.status),
            headers=_header_options(rendered.headers),
            body=rendered.body.decode("utf-8"),
        ),
    )
