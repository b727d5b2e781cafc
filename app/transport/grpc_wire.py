"""Envoy's gRPC ext_authz messages <-> ztauthz values. Pure functions, no I/O.

The messages are ztauthz's own declaration of Envoy's (app/protos/envoy_ext_authz.proto: the
fields used here, with Envoy's field numbers, so they are wire-compatible with
``envoy.service.auth.v3``).

``CheckRequest`` -> ``RequestContext`` (the same one the HTTP transport builds, plus the
connection facts only gRPC carries) and ``Rendered`` -> ``CheckResponse`` (``encode_response``:
its bytes, reusing an allow template's encoding; bench/README.md says why). The mapping is total:
a CheckRequest missing its HTTP attributes maps to an empty method, host and path, which the
pipeline refuses (400 ``path_rejected``), so a malformed request is still decided, logged and
denied like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from app.protos import envoy_ext_authz_pb2 as pb
from app.request import RequestContext, make_context
from app.transport.render import DECISION_ID, Rendered

CheckRequest = pb.CheckRequest
CheckResponse = pb.CheckResponse

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
_OVERWRITE = pb.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

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
_NOTHING: Mapping[str, str] = MappingProxyType({})
_NO_METADATA: Mapping[str, Mapping[str, object]] = MappingProxyType({})


def to_context(
    request: CheckRequest, metadata: Iterable[tuple[str, str | bytes]] = ()
) -> RequestContext:
    """The RequestContext for one CheckRequest (and the call's ``metadata``, for the trace
    context of Envoy's own ext_authz span); never raises on missing fields.

    What ``make_context`` would build from the same fields, built directly: this runs on
    every gRPC check, and the headers are lower-cased once, the empty maps shared (a unit test
    compares the two)."""
    attributes = request.attributes
    http = attributes.request.http
    source = attributes.source
    headers = _headers(http)
    for key, value in metadata:
        name = key.lower()
        if name in TRACE_METADATA and isinstance(value, str):
            headers[name] = value
    extensions = attributes.context_extensions
    route = attributes.route_metadata_context
    scheme = http.scheme  # DPoP's htu (RFC 9449 §4.3): the scheme Envoy saw
    return RequestContext(
        method=http.method.upper(),
        host=http.host,
        path=http.path,  # the original path, query included, after Envoy's normalization
        headers=MappingProxyType(headers),
        transport=TRANSPORT,
        source_address=_ip(source),
        peer_certificate=source.certificate or None,
        peer_principal=source.principal or None,
        context_extensions=MappingProxyType(dict(extensions)) if len(extensions) else _NOTHING,
        route_metadata=(
            MappingProxyType(_metadata(route)) if len(route.filter_metadata) else _NO_METADATA
        ),
        scheme=scheme.lower() if scheme else None,
    )


def _headers(http: pb.AttributeContext.HttpRequest) -> dict[str, str]:
    """Request headers, lower-cased, as the HTTP transport sees them: the allow-listed headers
    plus ``host``, without HTTP/2 pseudo-headers (``:path`` and friends are the method, host and
    path fields). Envoy fills ``header_map`` instead of ``headers`` when ``encode_raw_headers``
    is on; repeated headers are joined with ',' as Envoy does."""
    pairs: Iterable[tuple[str, str]]
    if http.HasField("header_map") and len(http.header_map.headers):
        pairs = [
            (h.key, h.raw_value.decode("latin-1") if h.raw_value else h.value)
            for h in http.header_map.headers
        ]
    else:
        mapped = http.headers  # keys and lookups: cheaper than its items() view
        pairs = [(key, mapped[key]) for key in mapped]
    headers: dict[str, str] = {}
    for key, value in pairs:
        name = key.lower()
        if name[:1] == ":" or name == "host":
            continue
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    if http.host:
        # As over HTTP, where the check request carries the original Host header.
        headers["host"] = http.host
    return headers


def _ip(peer: pb.AttributeContext.Peer) -> str | None:
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


def _metadata(metadata: pb.Metadata) -> dict[str, Mapping[str, object]]:
    """``filter_metadata`` as namespace -> read-only JSON object."""
    out: dict[str, Mapping[str, object]] = {}
    for namespace, struct in metadata.filter_metadata.items():
        frozen = _freeze(json_format.MessageToDict(struct))
        if isinstance(frozen, Mapping):
            out[str(namespace)] = frozen
    return out


def encode_response(rendered: Rendered, reason: str) -> bytes:
    """``to_check_response(rendered, reason)``, serialized. An allow rendered from a template
    (app/transport/render.py) is the template's CheckResponse, encoded once and kept on it,
    after a CheckResponse holding the decision id alone: protobuf parses concatenated messages
    as one, merged (repeated fields appended, in order), so the bytes parse to exactly
    ``to_check_response``'s message (a unit test compares them) while only the decision id is
    encoded per check."""
    template = rendered.template
    if template is None or rendered.status != 200:
        return to_check_response(rendered, reason).SerializeToString()
    fixed = template.wire.get(TRANSPORT)
    if not isinstance(fixed, bytes):
        whole = Rendered(200, template.headers, b"", template.headers_to_remove)
        fixed = template.wire[TRANSPORT] = to_check_response(whole, reason).SerializeToString()
    _DECISION_ID_VALUE.value = rendered.headers[DECISION_ID]
    return _DECISION_ID_ONLY.SerializeToString() + fixed


# The CheckResponse holding a decision id alone, reused for every allow: only its value is
# set per check, instead of building four messages anew (bench/README.md, gRPC). Only the
# event loop encodes.
_DECISION_ID_ONLY = pb.CheckResponse(
    ok_response=pb.OkHttpResponse(
        headers=(
            pb.HeaderValueOption(header=pb.HeaderValue(key=DECISION_ID), append_action=_OVERWRITE),
        )
    )
)
_DECISION_ID_VALUE = _DECISION_ID_ONLY.ok_response.headers[0].header


def _header_options(headers: Mapping[str, str]) -> list[pb.HeaderValueOption]:
    return [
        pb.HeaderValueOption(header=pb.HeaderValue(key=name, value=value), append_action=_OVERWRITE)
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
        return pb.CheckResponse(
            status=status,
            ok_response=pb.OkHttpResponse(
                headers=_header_options(rendered.headers),
                headers_to_remove=list(rendered.headers_to_remove),
            ),
        )
    return pb.CheckResponse(
        status=status,
        denied_response=pb.DeniedHttpResponse(
            status=pb.HttpStatus(code=rendered.status),
            headers=_header_options(rendered.headers),
            body=rendered.body.decode("utf-8"),
        ),
    )
