"""The Envoy configurations of the load scenarios, all derived from the shipped bootstraps.

Every scenario runs deploy/envoy/envoy.yaml (or envoy-grpc.yaml) re-ported by
app/dev/envoy.py, so listener, path normalization and header hygiene are the shipped ones;
only the authorization filter differs:

- ``none``   (4) the ext_authz filter removed: Envoy straight to the upstream;
- ``native`` (5) ext_authz replaced by Envoy's own ``jwt_authn`` (the dev issuer's JWKS inline,
  its verified-JWT cache on) and ``rbac`` enforcing the benchmark rule ``invoices-read``
  (GET /invoices or /invoices/*, group finance or auditors, scope invoices:read): the
  in-proxy floor, with no extra hop;
- ``http`` / ``grpc`` (6, 6b) the shipped ext_authz to ztauthz, unchanged;
- ``http-bare`` (6i) the shipped HTTP ext_authz, unchanged, asking the bare endpoint (which
  answers 200 to anything) instead of ztauthz: the ceiling of any HTTP authorization service
  written on uvicorn;
- ``http-envoy`` (6n) the same, asking a second Envoy that answers 200 itself
  (``direct_response``, ``answering_config``): the physical ceiling of any HTTP authorization
  service on this machine, whatever it is written in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml

from app.dev.envoy import render_envoy_config, shipped_envoy_config

Variant = Literal["none", "native", "http", "grpc", "http-bare", "http-envoy"]
_EXT_AUTHZ = "envoy.filters.http.ext_authz"
_JWT_AUTHN = "envoy.filters.http.jwt_authn"
_PROVIDER = "ztauthz_bench"


def _http_filters(config: dict[str, Any]) -> list[dict[str, Any]]:
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    filters: list[dict[str, Any]] = hcm["http_filters"]
    return filters


def jwt_authn_filter(issuer: str, audience: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Envoy's JWT verification for the dev issuer, as ztauthz's issuer configuration has it
    (audience, RS256/ES256 keys from the JWKS, 30 s clock skew)."""
    return {
        "name": _JWT_AUTHN,
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                _PROVIDER: {
                    "issuer": issuer,
                    "audiences": [audience],
                    "local_jwks": {"inline_string": json.dumps(jwks)},
                    "forward": True,
                    "payload_in_metadata": "jwt_payload",
                    "clock_skew_seconds": 30,
                    "jwt_cache_config": {"jwt_cache_size": 10000},
                    "claim_to_headers": [{"header_name": "x-auth-subject", "claim_name": "sub"}],
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": _PROVIDER}}],
        },
    }


def _claim(name: str, value: dict[str, Any]) -> dict[str, Any]:
    path = [{"key": "jwt_payload"}, {"key": name}]
    matcher = {"filter": _JWT_AUTHN, "path": path, "value": value}
    return {"sourced_metadata": {"metadata_matcher": matcher}}  # dynamic metadata


def rbac_filter() -> dict[str, Any]:
    """The benchmark rule ``invoices-read`` as an RBAC allow policy (default deny)."""
    in_group = [
        _claim("groups", {"list_match": {"one_of": {"string_match": {"exact": group}}}})
        for group in ("finance", "auditors")
    ]
    has_scope = _claim(
        "scope", {"string_match": {"safe_regex": {"regex": "(.* )?invoices:read( .*)?"}}}
    )
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {
                "action": "ALLOW",
                "policies": {
                    "invoices-read": {
                        "permissions": [
                            {
                                "and_rules": {
                                    "rules": [
                                        {
                                            "header": {
                                                "name": ":method",
                                                "string_match": {"exact": "GET"},
                                            }
                                        },
                                        {
                                            "url_path": {
                                                "path": {
                                                    "safe_regex": {"regex": "/invoices(/[^/]+)?"}
                                                }
                                            }
                                        },
                                    ]
                                }
                            }
                        ],
                        "principals": [
                            {"and_ids": {"ids": [{"or_ids": {"ids": in_group}}, has_scope]}}
                        ],
                    }
                },
            },
        },
    }


def scenario_config(
    variant: Variant,
    *,
    listen_port: int,
    admin_port: int,
    upstream_port: int,
    authz_port: int,
    issuer: str,
    audience: str,
    jwks: dict[str, Any],
) -> dict[str, Any]:
    config = render_envoy_config(
        shipped_envoy_config("grpc" if variant == "grpc" else "http"),
        listen_port=listen_port,
        admin_port=admin_port,
        authz_port=authz_port,
        upstream_port=upstream_port,
    )
    filters = _http_filters(config)
    at = next(i for i, f in enumerate(filters) if f.get("name") == _EXT_AUTHZ)
    if variant == "none":
        del filters[at]
    elif variant == "native":
        filters[at : at + 1] = [jwt_authn_filter(issuer, audience, jwks), rbac_filter()]
    return config


def answering_config(*, listen_port: int, admin_port: int) -> dict[str, Any]:
    """An Envoy that answers every request 200 itself (``direct_response``), the authorization
    service of scenario 6n: an HTTP/1.1 server with no Python in it."""
    return {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "answer",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": listen_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters."
                                        "network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "answer",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "direct_response": {"status": 200},
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy."
                                                    "extensions.filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }


def write_yaml(destination: Path, comment: str, config: dict[str, Any]) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(
        f"# {comment} (bench/envoy_configs.py).\n" + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )
    return destination


def write_scenario_config(destination: Path, variant: Variant, **ports_and_issuer: Any) -> Path:
    config = scenario_config(variant, **ports_and_issuer)
    return write_yaml(destination, f"ztauthz benchmark, scenario Envoy '{variant}'", config)
