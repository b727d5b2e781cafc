"""Envoy's HTTP ext_authz contract (``http_service`` mode) <-> ztauthz values. Pure, no I/O.

The twin of ``grpc_wire.py``. Envoy sends the original method, ``path_prefix`` + the original
path (query included), the original Host and the allow-listed headers, without a body
(``request_head``) ; ztauthz answers with a status, headers and a body (``response_head``):

- allow: 200, the identity headers Envoy copies into the upstream request
  (``allowed_upstream_headers``), and ``x-envoy-auth-headers-to-remove`` naming the identity
  headers ztauthz did not set, so that a client can never smuggle one through;
- deny: the status, the headers Envoy copies to the client (``WWW-Authenticate``, ...) and the
  JSON body.

A check request outside ``path_prefix`` maps to an empty path, which the pipeline refuses
(400 ``path_rejected``): it is decided and logged like any other malformed request.
"""

from __future__ import annotations

from types import MappingProxyType

from app.http_facts import AUTHORIZATION, DPOP
from app.request import RequestContext
from app.transport.render import DECISION_ID, HEADERS_TO_REMOVE, Rendered, removed_value

TRANSPORT = "http"

RawHeaders = list[tuple[bytes, bytes]]


def original_path(raw_path: bytes, query: bytes, path_prefix: str) -> str:
    """The original request's path (and query) from the check request's; ``""`` when the
    check request is outside ``path_prefix`` (not a check Envoy would send)."""
    path = raw_path.decode("latin-1")
    if query:
        path = f"{path}?{query.decode('latin-1')}"
    return path[len(path_prefix) :] if path.startswith(path_prefix + "/") else ""


JOINED = (AUTHORIZATION, DPOP)


def request_context(
    method: str, raw_path: bytes, query: bytes, raw: RawHeaders, path_prefix: str
) -> RequestContext:
    """The RequestContext of a check request's head: its method, path and query (as sent) and
    headers. Header names are lower-cased; the last of repeated headers wins, except
    ``host``, where the first counts, and the credentials in ``JOINED``, whose repeats are
    joined with ',' as Envoy joins them (two proofs or two tokens are refused, never one of
    them picked)."""
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}
    host = headers.get("host", "")
    if len(headers) < len(raw):  # a repeated header: the first Host counts
        host = next((v.decode("latin-1") for n, v in raw if n.lower() == b"host"), "")
        for name in JOINED:
            values = [v.decode("latin-1") for n, v in raw if n.decode("latin-1").lower() == name]
            if len(values) > 1:
                headers[name] = ",".join(values)
    return RequestContext(
        method=method.upper(),
        host=host,
        path=original_path(raw_path, query, path_prefix),
        headers=MappingProxyType(headers),
        transport=TRANSPORT,
    )


def response_headers(rendered: Rendered) -> dict[str, str]:
    """The rendered headers, plus the headers to remove in Envoy's HTTP-mode header."""
    headers = dict(rendered.headers)
    if rendered.headers_to_remove:
        headers[HEADERS_TO_REMOVE] = ",".join(rendered.headers_to_remove)
    return headers


_NO_BODY = (b"content-length", b"0")
_DECISION_ID = DECISION_ID.encode("latin-1")


def response_head(rendered: Rendered) -> RawHeaders:
    """``response_headers`` as the server writes them, with the body's content-length. An
    allow rendered from a template reuses the template's encoded headers (kept on it)."""
    template = rendered.template
    if template is not None:
        fixed = template.wire.get(TRANSPORT)
        if not isinstance(fixed, list):
            fixed = template.wire[TRANSPORT] = _encode(template.headers, template.headers_to_remove)
        decision_id = rendered.headers[DECISION_ID].encode("latin-1")
        return [_NO_BODY, (_DECISION_ID, decision_id), *fixed]
    raw = [(b"content-length", str(len(rendered.body)).encode())]
    raw += _encode(rendered.headers, rendered.headers_to_remove)
    return raw


def _encode(headers: dict[str, str], remove: tuple[str, ...]) -> RawHeaders:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if remove:
        raw.append((HEADERS_TO_REMOVE.encode(), removed_value(remove)))
    return raw
