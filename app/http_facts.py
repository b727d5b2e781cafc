"""HTTP facts every layer uses, defined once: request methods and the header names ztauthz
reads. (The identity headers it writes belong to the renderer: app/transport/render.py.)"""

from __future__ import annotations

from typing import Final

# The request methods Envoy forwards and policies name, in the order an ``Allow`` header lists
# them (RFC 9110 section 9 plus PATCH, RFC 5789).
METHOD_ORDER: Final = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "OPTIONS",
    "CONNECT",
    "TRACE",
)
METHODS: Final = frozenset(METHOD_ORDER)

HOST: Final = "host"
AUTHORIZATION: Final = "authorization"
PROXY_AUTHORIZATION: Final = "proxy-authorization"
COOKIE: Final = "cookie"
FORWARDED_FOR: Final = "x-forwarded-for"
FORWARDED_CLIENT_CERT: Final = "x-forwarded-client-cert"
# The scheme the client used, as Envoy sets it from the downstream connection (it overwrites a
# client's own value unless it trusts the hop before it): DPoP's htu (RFC 9449 §4.3).
FORWARDED_PROTO: Final = "x-forwarded-proto"
DPOP: Final = "dpop"  # a DPoP proof (RFC 9449 §4.1)
DPOP_NONCE: Final = "dpop-nonce"  # a server nonce for the next proof (RFC 9449 §8, §9)

# Headers that carry credentials: never shown to policy conditions, never usable as the name
# of an evidence header.
CREDENTIAL_HEADERS: Final = frozenset({AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, DPOP})
