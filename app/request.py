"""RequestContext: what the transport knows about the original request, and nothing more."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_NOTHING: Mapping[str, object] = MappingProxyType({})  # read-only: one shared empty mapping


def _no_strings() -> Mapping[str, str]:
    return _NOTHING  # type: ignore[return-value]


def _no_metadata() -> Mapping[str, Mapping[str, object]]:
    return _NOTHING  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The original request as Envoy described it.

    ``path`` is the raw original path (query included, ``path_prefix`` already removed);
    normalization happens in the policy layer, which rejects what it cannot match safely.
    ``headers`` are lower-cased names; only the headers Envoy allow-listed are present.

    The connection facts below come from Envoy itself, never from request headers, and only
    the gRPC transport receives them (HTTP ext_authz sends headers only); they stay ``None`` or
    empty otherwise:

    ``source_address``      IP address of the downstream peer (``attributes.source.address``);
                            not ``X-Forwarded-For``.
    ``peer_certificate``    the client certificate when Envoy terminated mTLS: URL-encoded PEM,
                            exactly as Envoy sends it (``include_peer_certificate: true``).
    ``peer_principal``      Envoy's name for that peer: the certificate's URI SAN (a SPIFFE ID
                            such as ``spiffe://example.org/ns/default/sa/billing``), else its
                            DNS SAN, else its subject.
    ``context_extensions``  the route's ``ExtAuthzPerRoute`` context extensions (operator-set).
    ``route_metadata``      the route's ``filter_metadata``, namespace -> JSON object, for the
                            namespaces listed in ``route_metadata_context_namespaces``.
    ``scheme``              the request's scheme as Envoy saw it (``attributes.request.http
                            .scheme``); over HTTP the ``x-forwarded-proto`` header Envoy sets
                            says the same (app/identity/binding.py reads both).
    """

    method: str
    host: str
    path: str
    headers: Mapping[str, str]
    transport: str = "http"
    source_address: str | None = None
    peer_certificate: str | None = None
    peer_principal: str | None = None
    context_extensions: Mapping[str, str] = field(default_factory=_no_strings)
    route_metadata: Mapping[str, Mapping[str, object]] = field(default_factory=_no_metadata)
    scheme: str | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def make_context(
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    transport: str = "http",
    *,
    source_address: str | None = None,
    peer_certificate: str | None = None,
    peer_principal: str | None = None,
    context_extensions: Mapping[str, str] | None = None,
    route_metadata: Mapping[str, Mapping[str, object]] | None = None,
    scheme: str | None = None,
) -> RequestContext:
    lowered = MappingProxyType({k.lower(): v for k, v in headers.items()})
    return RequestContext(
        method=method.upper(),
        host=host,
        path=path,
        headers=lowered,
        transport=transport,
        source_address=source_address or None,
        peer_certificate=peer_certificate or None,
        peer_principal=peer_principal or None,
        context_extensions=MappingProxyType(dict(context_extensions or {})),
        route_metadata=MappingProxyType(dict(route_metadata or {})),
        scheme=scheme.lower() if scheme else None,
    )
