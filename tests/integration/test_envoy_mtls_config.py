"""deploy/envoy/envoy-mtls.yaml: the real Envoy accepts it, it is envoy.yaml plus mTLS and
XFCC (SANITIZE_SET) and nothing else, and rendering it only swaps certificate files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.dev.envoy import (
    SHIPPED_ENVOY_CONFIG,
    SHIPPED_ENVOY_MTLS_CONFIG,
    DownstreamTls,
    load_envoy_template,
    render_envoy_config,
    validate_envoy_config,
)
from app.dev.pki import make_dev_pki

pytestmark = pytest.mark.integration

PLACEHOLDERS = (
    "/etc/envoy/tls/server.crt",
    "/etc/envoy/tls/server.key",
    "/etc/envoy/tls/client-ca.crt",
)
LISTENER = "static_resources.listeners[0]."
CHAIN = LISTENER + "filter_chains[0]."
HCM = CHAIN + "filters[0].typed_config."


def leaves(node: Any, path: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(leaves(value, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(node, list):
        out = {}
        for index, value in enumerate(node):
            out.update(leaves(value, f"{path}[{index}]"))
        return out
    return {path: node}


def test_envoy_accepts_the_shipped_file_with_real_certificates(tmp_path: Path) -> None:
    pki = make_dev_pki(tmp_path / "pki")
    text = SHIPPED_ENVOY_MTLS_CONFIG.read_text(encoding="utf-8")
    for placeholder, real in zip(
        PLACEHOLDERS, (pki.server.certificate, pki.server.key, pki.ca), strict=True
    ):
        assert text.count(placeholder) == 1
        text = text.replace(placeholder, str(real))
    path = tmp_path / "envoy-mtls.yaml"
    path.write_text(text, encoding="utf-8")
    validate_envoy_config(path)


def test_it_is_envoy_yaml_plus_mtls_and_xfcc() -> None:
    def split(config: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
        flat = leaves(config)
        allowed = {k for k in flat if ".allowed_headers.patterns[" in k}
        return {k: v for k, v in flat.items() if k not in allowed}, {flat[k] for k in allowed}

    plain, plain_allowed = split(load_envoy_template(SHIPPED_ENVOY_CONFIG))
    mtls, mtls_allowed = split(load_envoy_template(SHIPPED_ENVOY_MTLS_CONFIG))
    # ztauthz may also see the XFCC header Envoy sets; nothing else changes in what it sees.
    assert mtls_allowed == plain_allowed | {"x-forwarded-client-cert"}
    assert "x-device-token" in plain_allowed
    assert set(plain) - set(mtls) == set()
    changed = {k for k in plain if plain[k] != mtls[k]}
    assert changed == {
        "admin.address.socket_address.port_value",
        LISTENER + "address.socket_address.port_value",
    }
    added = set(mtls) - set(plain)
    assert {k for k in added if not k.startswith(CHAIN + "transport_socket.")} == {
        HCM + "forward_client_cert_details",
        *(HCM + "set_current_client_cert_details." + name for name in ("subject", "uri", "dns")),
    }
    assert mtls[HCM + "forward_client_cert_details"] == "SANITIZE_SET"
    assert mtls[CHAIN + "transport_socket.typed_config.require_client_certificate"] is True


def test_rendering_replaces_only_the_certificate_files(tmp_path: Path) -> None:
    pki = make_dev_pki(tmp_path / "pki")
    tls = DownstreamTls(pki.server.certificate, pki.server.key, client_ca=pki.ca)
    shipped = leaves(load_envoy_template(SHIPPED_ENVOY_MTLS_CONFIG))
    rendered = leaves(
        render_envoy_config(
            SHIPPED_ENVOY_MTLS_CONFIG,
            listen_port=1,
            admin_port=2,
            authz_port=3,
            upstream_port=4,
            tls=tls,
        )
    )
    assert rendered.keys() == shipped.keys()
    files = {v for k, v in rendered.items() if shipped[k] != v and k.endswith(".filename")}
    assert files == {str(pki.server.certificate), str(pki.server.key), str(pki.ca)}
