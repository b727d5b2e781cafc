"""Evidence in telemetry: the gather_evidence span (only when evidence is configured) and the
device, client IP, country and workload fields of the decision log line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.dev.issuer import create_issuer_app
from tests.unit.dev.dev_helpers import serving, shared_keys
from tests.unit.evidence.evidence_support import write_mmdb
from tests.unit.telemetry.test_check_telemetry import VALIDATOR, by_name, harness, hex_ids


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with serving(lambda url: create_issuer_app(shared_keys(), url)) as url:
        yield url


async def test_evidence_is_a_step_of_the_check_and_is_logged(issuer: str, tmp_path: Path) -> None:
    mmdb = write_mmdb(tmp_path / "c.mmdb", {"203.0.113.0/24": "DE"})
    evidence = {
        "client_ip": {},
        "geoip": {"path": str(mmdb)},
        "token_claims": [{"issuer": issuer, "device": {"id": "device_id"}}],
        "client_certificate": {"envoy_forward_client_cert_details": "SANITIZE_SET"},
    }
    async with harness(issuer, evidence=evidence) as h:
        token = h.token(extra_claims={"device_id": "laptop-1"})
        _, decision = await h.check(
            authorization=f"Bearer {token}",
            **{
                "x-ztauthz-client-address": "203.0.113.7",
                "x-forwarded-client-cert": "URI=spiffe://example.org/ns/a/sa/b",
            },
        )
        spans = by_name(h.spans())
        (line,) = h.decisions()
    assert decision.allow and decision.evidence is not None
    assert set(spans) == {
        "ztauthz.check",
        "ztauthz.verify_token",
        "ztauthz.gather_evidence",
        "ztauthz.evaluate_policy",
    }
    step = spans["ztauthz.gather_evidence"]
    assert step.parent is not None
    assert f"{step.parent.span_id:016x}" == hex_ids(spans["ztauthz.check"])[1]
    VALIDATOR.validate(line)
    assert (line["device_id"], line["client_ip"], line["country"], line["workload_id"]) == (
        "laptop-1",
        "203.0.113.7",
        "DE",
        "spiffe://example.org/ns/a/sa/b",
    )
