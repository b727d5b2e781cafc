"""The shipped Envoy bootstrap: the real binary accepts it, and the tests run it unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.dev.envoy import (
    SHIPPED_ENVOY_CONFIG,
    EnvoyConfigError,
    EnvoyValidationError,
    load_envoy_template,
    render_envoy_config,
    validate_envoy_config,
    write_envoy_config,
)

pytestmark = pytest.mark.integration


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


def test_envoy_accepts_the_shipped_config_without_warnings() -> None:
    validate_envoy_config(SHIPPED_ENVOY_CONFIG)


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


def test_rendering_changes_only_addresses_and_ports(tmp_path: Path) -> None:
    shipped = _leaves(load_envoy_template())
    rendered = _leaves(
        render_envoy_config(
            SHIPPED_ENVOY_CONFIG,
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
    assert sorted(changed.values(), key=str) == sorted(
        [20001, 20002, 20003, 20004, "127.0.0.3", "127.0.0.4", "http://127.0.0.3:20003"], key=str
    )
    assert all(
        key.endswith(("socket_address.port_value", "socket_address.address", "server_uri.uri"))
        for key in changed
    )
    validate_envoy_config(
        write_envoy_config(
            tmp_path / "envoy.yaml",
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
def test_rendering_refuses_a_changed_shape(tmp_path: Path, what: str, edit: Any) -> None:
    config = load_envoy_template()
    edit(config)
    template = tmp_path / "changed.yaml"
    template.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(EnvoyConfigError, match=what):
        render_envoy_config(template, listen_port=1, admin_port=2, authz_port=3, upstream_port=4)
