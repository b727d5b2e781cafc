"""Every shipped Envoy configuration forwards what the sender-constrained token checks need
(docs/sender-constrained-tokens.md): the ``dpop`` proof header and ``x-forwarded-proto`` (the
scheme Envoy set from the connection, which a proof's htu names) to ztauthz, and on HTTP
ext_authz the ``dpop-nonce`` of a use_dpop_nonce challenge back to the client. gRPC ext_authz
also carries the scheme in the CheckRequest and the client certificate with
include_peer_certificate (certificate-bound tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_support import COMPOSE, DEPLOY, ISTIO, K8S, http_filters

ENVOY_CONFIGS = [
    *sorted((DEPLOY / "envoy").glob("envoy*.yaml")),
    COMPOSE / "envoy.yaml",
    K8S / "base" / "envoy.yaml",
    K8S / "injector" / "base" / "envoy.yaml",
]
IDS = [str(p.relative_to(DEPLOY)) for p in ENVOY_CONFIGS]
NEEDED = {"authorization", "dpop", "x-forwarded-proto"}


def ext_authz_filters(path: Path) -> list[dict[str, Any]]:
    bootstrap = yaml.safe_load(path.read_text())
    found = []
    for listener in bootstrap["static_resources"]["listeners"]:
        for f in http_filters(bootstrap, listener["name"]):
            if f["name"] == "envoy.filters.http.ext_authz":
                found.append(f["typed_config"])
    assert found, f"{path}: no ext_authz filter"
    return found


def exact(patterns: list[dict[str, str]]) -> set[str]:
    return {p["exact"] for p in patterns if "exact" in p}


@pytest.mark.parametrize("path", ENVOY_CONFIGS, ids=IDS)
def test_the_proof_and_the_scheme_reach_ztauthz(path: Path) -> None:
    for config in ext_authz_filters(path):
        allowed = exact(config["allowed_headers"]["patterns"])
        assert allowed >= NEEDED, f"{path}: allowed_headers lacks {NEEDED - allowed}"
        if "http_service" in config:
            client = config["http_service"]["authorization_response"]["allowed_client_headers"]
            assert {"www-authenticate", "dpop-nonce"} <= exact(client["patterns"])
        else:
            # gRPC: denied responses' headers reach the client as they are; the scheme and the
            # client certificate travel in the CheckRequest.
            assert config.get("include_peer_certificate") is True


@pytest.mark.parametrize("path", ENVOY_CONFIGS, ids=IDS)
def test_envoy_sets_the_scheme_itself(path: Path) -> None:
    """With use_remote_address and no trusted hops Envoy overwrites a client's
    x-forwarded-proto with the scheme of the downstream connection."""
    bootstrap = yaml.safe_load(path.read_text())
    for listener in bootstrap["static_resources"]["listeners"]:
        filters = http_filters(bootstrap, listener["name"])
        if not any(f["name"] == "envoy.filters.http.ext_authz" for f in filters):
            continue  # e.g. a health listener that authorizes nothing
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        assert hcm["use_remote_address"] is True
        assert hcm.get("xff_num_trusted_hops", 0) == 0


@pytest.mark.parametrize("name", ["mesh-config.yaml", "istiod-values.yaml"])
def test_istio_extension_provider_forwards_the_proof_and_the_nonce(name: str) -> None:
    text = yaml.safe_load((ISTIO / name).read_text())
    providers = (text.get("spec", text))["meshConfig"]["extensionProviders"]
    http = next(p for p in providers if p["name"] == "ztauthz")["envoyExtAuthzHttp"]
    assert set(http["includeRequestHeadersInCheck"]) >= NEEDED
    assert {"www-authenticate", "dpop-nonce"} <= set(http["headersToDownstreamOnDeny"])
