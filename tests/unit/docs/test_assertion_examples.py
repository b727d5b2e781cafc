"""docs/identity-assertion.md shows the verification examples the integration tests run, whole,
and documents every claim the assertion can carry."""

from __future__ import annotations

import re

import pytest

from app.assertion.claims import assertion_claims
from app.evidence.model import Device, Evidence, Location, Workload
from tests.unit.assertion.assertion_support import allow, principal
from tests.unit.docs.docs_support import ROOT

DOC = ROOT / "docs" / "identity-assertion.md"
BLOCK = re.compile(r"```(?:python|js)\n(?:#|//) (docs/examples/assertion/\S+)\n(.*?)```", re.DOTALL)


def shown() -> dict[str, str]:
    return {m.group(1): m.group(2) for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))}


def test_both_examples_are_shown() -> None:
    assert set(shown()) == {
        "docs/examples/assertion/verify_assertion.py",
        "docs/examples/assertion/verify-assertion.mjs",
    }


@pytest.mark.parametrize("file", sorted(shown()))
def test_each_example_is_shown_whole_and_as_it_is(file: str) -> None:
    assert shown()[file] == (ROOT / file).read_text(encoding="utf-8")


def test_every_claim_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("| claim | what it is |") :].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| (.*?) \|", table, re.MULTILINE)[1:])
    names = {name for cell in documented for name in re.findall(r"`([a-z_]+)`", cell)}
    everything = Evidence(
        device=Device("d", "device_token"),
        location=Location(client_ip="192.0.2.1", country="DE", ip_country="DE"),
        workload=Workload("spiffe://e.org/x", "e.org", "peer"),
    )
    who = principal(acr="phr", amr=frozenset({"pwd"}), auth_time=1)
    claims = assertion_claims(
        allow(who, evidence=everything),
        issuer="i",
        audience="a",
        issued_at=1,
        expires_at=2,
        jti="j",
    )
    assert set(claims) - names == set()
