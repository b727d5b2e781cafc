"""A minimal dev OIDC issuer: discovery document and JWKS for the dev keys, nothing else.

There is no token endpoint; tokens come from ``ztauthz dev token``, which signs with the same
keys directory (``--dpop-key`` binds one to a DPoP key, ``--bind-cert`` to a client
certificate: sender-constrained tokens, docs/sender-constrained-tokens.md). If the issuer URL has a path (``http://127.0.0.1:9400/realms/dev``) both
documents are served under it, as OIDC discovery expects.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.dev.cli_dpop import DPOP_ALGORITHMS
from app.dev.keys import ALGORITHMS, DevKeys

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks.json"
SSF_PATH = "/.well-known/ssf-configuration"  # the dev issuer is also the dev SSF transmitter
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9400

_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "groups", "scope", "cnf"]


def discovery_document(issuer_url: str) -> dict[str, Any]:
    """The OpenID Provider metadata this issuer publishes (only what a verifier needs)."""
    return {
        "issuer": issuer_url,
        "jwks_uri": issuer_url.rstrip("/") + JWKS_PATH,
        "id_token_signing_alg_values_supported": list(ALGORITHMS),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "claims_supported": list(_CLAIMS),
        # The proof algorithms of the DPoP-bound tokens it issues (RFC 9449 §5.1).
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
    }


def ssf_configuration(issuer_url: str) -> dict[str, Any]:
    """The SSF transmitter configuration metadata (SSF 1.0 §7.1) of ``ztauthz dev signal``,
    which signs its SETs with the same dev keys (as an IdP transmitting CAEP events does)."""
    return {
        "spec_version": "1_0",
        "issuer": issuer_url,
        "jwks_uri": issuer_url.rstrip("/") + JWKS_PATH,
        "delivery_methods_supported": ["urn:ietf:rfc:8935"],
    }


def check_issuer_url(issuer_url: str) -> str:
    """An issuer URL is http(s) with a host and no query or fragment (OIDC Discovery 4.3)."""
    parts = urlsplit(issuer_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"issuer URL must be http(s)://host[:port][/path], got {issuer_url!r}")
    if parts.query or parts.fragment:
        raise ValueError("issuer URL must not have a query or fragment")
    return issuer_url


def create_issuer_app(keys: DevKeys, issuer_url: str) -> Starlette:
    """The issuer's ASGI app; the documents are built once (the keys never change)."""
    prefix = urlsplit(check_issuer_url(issuer_url)).path.rstrip("/")
    discovery = discovery_document(issuer_url)
    ssf = ssf_configuration(issuer_url)
    jwks = keys.jwks()

    async def ssf_metadata(_: Request) -> JSONResponse:
        return JSONResponse(ssf)

    async def openid_configuration(_: Request) -> JSONResponse:
        return JSONResponse(discovery)

    async def jwks_json(_: Request) -> JSONResponse:
        return JSONResponse(jwks, media_type="application/jwk-set+json")

    return Starlette(
        routes=[
            Route(prefix + DISCOVERY_PATH, openid_configuration, methods=["GET"]),
            Route(prefix + JWKS_PATH, jwks_json, methods=["GET"]),
            # SSF 1.0 §7.2.1: the well-known path goes between the host and the issuer's path
            Route(SSF_PATH + prefix, ssf_metadata, methods=["GET"]),
        ]
    )


def serve_issuer(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    keys_dir: Path = Path(".dev/keys"),
    issuer_url: str | None = None,
) -> None:
    """Run the issuer until interrupted. Prints the issuer URL (alone, on stdout) once bound.

    ``port=0`` picks a free port; the default issuer URL then names the port actually bound.
    """
    if issuer_url is not None:
        check_issuer_url(issuer_url)
    keys = DevKeys.load_or_create(keys_dir)
    sock, base_url = listen(host, port)
    url = issuer_url or base_url
    app = create_issuer_app(keys, url)
    print(
        "*** ztauthz dev issuer: DEVELOPMENT ONLY. Signing keys are plain files in "
        f"{keys_dir}; never let a real deployment trust this issuer. ***",
        file=sys.stderr,
        flush=True,
    )
    run_on(app, sock, url)


def listen(host: str, port: int) -> tuple[socket.socket, str]:
    """Bind a TCP listening socket (``port=0``: any free port) and name its base URL."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    bound = sock.getsockname()[1]
    if not _is_loopback(host):
        print(f"*** warning: dev server listening on non-loopback {host} ***", file=sys.stderr)
    return sock, f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"


def run_on(app: Any, sock: socket.socket, url: str) -> None:
    """Print ``url`` alone on stdout (the ready line), then serve ``app`` until interrupted."""
    print(url, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
