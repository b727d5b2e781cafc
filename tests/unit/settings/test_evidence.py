"""The evidence: section of the configuration: defaults, validation, file:line errors."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import pytest

from app.settings import ConfigError, Settings, load_settings
from tests.unit.settings.config_files import ONE_ISSUER, write

BASE = ONE_ISSUER + "policies: ./policies\nevidence:\n"

FULL = (
    BASE
    + """\
  client_ip:
    trusted_hops: 1
    trusted_proxies: [10.0.0.0/8, "2001:db8::/32"]
  networks:
    corp-vpn: [10.8.0.0/16, "fd00::/8"]
    tor-exits: [185.220.101.0/24]
  geoip: {path: geo/country.mmdb, reload_interval: 5m}
  location: {country_from_claims: true}
  token_claims:
    - issuer: https://idp.example.com
      device: {id: device.id, managed: device.managed, os_version: device.os.version}
      country: loc.country
  device_token:
    header: x-posture
    provider:
      issuer: https://mdm.example.com
      audiences: [https://api.example.com]
      algorithms: [ES256]
    max_age: 5m
    binding_claim: did
  client_certificate:
    envoy_forward_client_cert_details: SANITIZE_SET
    device_uri_prefix: "urn:device:"
    devices_are_managed: true
"""
)


def test_nothing_is_gathered_by_default() -> None:
    settings = Settings.model_validate(
        {"issuers": [{"issuer": "https://idp.example.com", "audiences": ["a"]}]}
    )
    assert not settings.evidence.enabled


def test_a_full_evidence_section(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, FULL))
    evidence = settings.evidence
    assert evidence.enabled
    assert evidence.client_ip is not None and evidence.client_ip.trusted_hops == 1
    assert evidence.client_ip.envoy_use_remote_address is True
    assert evidence.client_ip.trusted_proxies[1] == ipaddress.ip_network("2001:db8::/32")
    assert sorted(evidence.networks) == ["corp-vpn", "tor-exits"]
    assert evidence.geoip is not None
    assert evidence.geoip.path == tmp_path / "geo" / "country.mmdb"  # beside the file
    assert evidence.geoip.reload_interval == timedelta(minutes=5)
    claims = evidence.token_claims[0]
    assert claims.device is not None and claims.device.id == "device.id"
    assert claims.device.compliant is None
    device = evidence.device_token
    assert device is not None and device.header == "x-posture"
    assert device.claims.os_version == "os.version"  # the default posture claim names
    assert device.max_age == timedelta(minutes=5)
    certificate = evidence.client_certificate
    assert certificate is not None and certificate.trust_xfcc
    assert certificate.device_uri_prefix == "urn:device:"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "envoy_forward_client_cert_details: SANITIZE_SET",
            "envoy_forward_client_cert_details: APPEND_FORWARD",
            ":27: evidence.client_certificate.envoy_forward_client_cert_details: with "
            "APPEND_FORWARD Envoy forwards the client's own x-forwarded-client-cert",
        ),
        (
            "corp-vpn: [10.8.0.0/16",
            "corp-vpn: [10.8.0.1/16",
            ":10: evidence.networks.corp-vpn[0]: '10.8.0.1/16' is not a CIDR",
        ),
        ("corp-vpn:", "Corp_VPN:", ":9: evidence.networks: network name 'Corp_VPN'"),
        (
            "tor-exits: [185.220.101.0/24]",
            "tor-exits: []",
            ":9: evidence.networks: network 'tor-exits' lists no CIDR",
        ),
        ("trusted_hops: 1", "trusted_hops: -1", ":7: evidence.client_ip.trusted_hops:"),
        (
            "header: x-posture",
            "header: Authorization",
            ":19: evidence.device_token.header: expected a lower-case header name",
        ),
        (
            "header: x-posture",
            "header: cookie",
            ":19: evidence.device_token.header: cookie carries",
        ),
        ("max_age: 5m", "max_age: 2d", ":24: evidence.device_token.max_age: must be between"),
        ("binding_claim: did", "binding_claim: a..b", ":25: evidence.device_token.binding_claim:"),
        (
            "      country: loc.country",
            "      country: loc.",
            ":17: evidence.token_claims[0].country:",
        ),
        ("reload_interval: 5m", "reload_interval: 10ms", ":12: evidence.geoip.reload_interval:"),
        (
            "  location: {country_from_claims: true}",
            "  location: {guess: true}",
            ":13: evidence.location.guess: unknown key",
        ),
        (
            "    - issuer: https://idp.example.com\n      device",
            "    - issuer: https://other.example.com\n      device",
            "evidence.token_claims names issuer(s) not in issuers",
        ),
        (
            "      issuer: https://mdm.example.com",
            "      issuer: https://idp.example.com",
            "evidence.device_token.provider must not also be an identity issuer",
        ),
        (
            "      algorithms: [ES256]",
            "      algorithms: [HS256]",
            ":23: evidence.device_token.provider.algorithms:",
        ),
    ],
)
def test_errors_name_the_key_and_line(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert FULL.count(old) == 1, old
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, FULL.replace(old, new)))
    assert any(expected in problem for problem in info.value.problems), info.value.problems


def test_networks_and_geoip_need_a_client_ip(tmp_path: Path) -> None:
    text = BASE + "  networks: {corp: [10.0.0.0/8]}\n"
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.problems == [
        f"{tmp_path / 'ztauthz.yaml'}:5: evidence: networks and geoip need evidence.client_ip "
        "(where the address is from)"
    ]
