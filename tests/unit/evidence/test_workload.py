"""SPIFFE IDs and the URI SANs of certificates."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from app.dev.pki import make_ca
from app.evidence.model import Workload
from app.evidence.workload import certificate_uris, spiffe_trust_domain, workload_from_uris


@pytest.mark.parametrize(
    ("uri", "domain"),
    [
        ("spiffe://example.org/ns/billing/sa/api", "example.org"),
        ("spiffe://prod.example/ns/payments/sa/api", "prod.example"),
        ("spiffe://example.org", "example.org"),
        ("spiffe://a-b_c.d/x.y-z_1", "a-b_c.d"),
        ("spiffe://Example.org/x", None),  # trust domains are lower-case
        ("spiffe://example.org/", None),  # no trailing slash
        ("spiffe://example.org//x", None),
        ("spiffe://example.org/./x", None),
        ("spiffe://example.org/a/..", None),
        ("spiffe://example.org/a?b", None),
        ("spiffe://example.org/a#b", None),
        ("spiffe://example.org:443/a", None),
        ("spiffe://user@example.org/a", None),
        ("spiffe:///a", None),
        ("SPIFFE://example.org/a", None),
        ("https://example.org/a", None),
        ("spiffe://example.org/" + "a" * 2100, None),
    ],
)
def test_spiffe_ids(uri: str, domain: str | None) -> None:
    assert spiffe_trust_domain(uri) == domain


def test_the_first_valid_spiffe_id_names_the_workload() -> None:
    uris = ["urn:ztauthz:device:d1", "spiffe://Bad/x", "spiffe://good.example/sa/a", "spiffe://x/y"]
    assert workload_from_uris(uris, "xfcc") == Workload(
        "spiffe://good.example/sa/a", "good.example", "xfcc"
    )
    assert workload_from_uris(["urn:x"], "peer") is None


def test_certificate_uris(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    pair = ca.issue("w", uris=["spiffe://example.org/a", "urn:ztauthz:device:d7"], dns=["w.local"])
    pem = pair.pem()
    assert certificate_uris(quote(pem, safe="")) == (
        "spiffe://example.org/a",
        "urn:ztauthz:device:d7",
    )
    assert certificate_uris(pem) == ("spiffe://example.org/a", "urn:ztauthz:device:d7")
    assert certificate_uris(ca.issue("no-san").pem()) == ()
    assert certificate_uris("not a certificate") == ()
