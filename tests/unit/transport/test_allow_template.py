"""Allow answers reuse what cannot change (app/transport/render.py ``AllowTemplate``): the
headers of an allow rendered from a template, their HTTP encoding (http_wire.response_head)
and their gRPC bytes (grpc_wire.encode_response) are exactly the full rendering's, check after
check, and a template never serves another principal, rule or policy version."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.decision import Decision
from app.evidence.model import Device, Evidence, Location
from app.identity.principal import Principal
from app.protos import envoy_ext_authz_pb2 as pb
from app.reasons import Reason
from app.settings import Response
from app.transport import grpc_wire, http_wire
from app.transport.render import DECISION_ID, Rendered, _render_allow, render

SETTINGS = Response()


def principal(subject: str = "alice", groups: frozenset[str] = frozenset({"finance"})) -> Principal:
    return Principal(
        issuer="https://idp.example.com",
        subject=subject,
        groups=groups,
        scopes=frozenset({"invoices:read"}),
        audience=("https://api.example.com",),
        expires_at=2_000_000_000,
        issued_at=1_999_999_000,
        claims=MappingProxyType({}),
        client_id="web",
    )


def allow(who: Principal, decision_id: str, rule: str = "read", version: str = "v1") -> Decision:
    return Decision(True, Reason.ALLOWED, decision_id, version, rule, "p", who)


def reference_head(rendered: Rendered) -> http_wire.RawHeaders:
    """What response_head writes without a template."""
    return http_wire.response_head(dataclasses.replace(rendered, template=None))


def test_the_second_allow_of_a_principal_is_rendered_from_its_template() -> None:
    alice = principal()
    first = render(allow(alice, "a" * 32), SETTINGS)
    second = render(allow(alice, "b" * 32), SETTINGS)
    third = render(allow(alice, "c" * 32), SETTINGS)
    assert first.template is None
    assert second.template is not None and third.template is second.template
    for decision_id, rendered in (("b" * 32, second), ("c" * 32, third)):
        full = _render_allow(allow(alice, decision_id))
        assert rendered == full
        assert list(rendered.headers) == list(full.headers)  # the same order, too
        assert rendered.headers[DECISION_ID] == decision_id


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_each_transport_encodes_a_templated_allow_as_the_full_rendering(transport: str) -> None:
    alice = principal("alice-" + transport)
    for n in range(4):  # the first sight, the template made, then reused twice
        decision = allow(alice, f"{n:032x}")
        rendered = render(decision, SETTINGS)
        if transport == "http":
            assert http_wire.response_head(rendered) == reference_head(rendered)
        else:
            encoded = grpc_wire.encode_response(rendered, decision.reason.value)
            expected = grpc_wire.to_check_response(_render_allow(decision), decision.reason.value)
            assert pb.CheckResponse.FromString(encoded) == expected


def test_a_template_is_per_principal_rule_and_policy_version() -> None:
    alice, bob = principal("alice-t"), principal("bob-t", frozenset({"auditors"}))
    for who in (alice, bob):
        for rule, version in (("read", "v1"), ("write", "v1"), ("read", "v2")):
            for n in range(3):
                decision = allow(who, f"{n:032x}", rule, version)
                assert render(decision, SETTINGS) == _render_allow(decision)


def test_allows_with_evidence_or_no_principal_are_rendered_whole() -> None:
    alice = principal("alice-e")
    evidence = Evidence(device=Device("dev-1", "device_token"), location=Location(country="DE"))
    for n in range(3):
        with_evidence = dataclasses.replace(allow(alice, f"{n:032x}"), evidence=evidence)
        anonymous = Decision(True, Reason.ALLOWED_ANONYMOUS, f"{n:032x}", "v1", "public", "p")
        for decision in (with_evidence, anonymous):
            rendered = render(decision, SETTINGS)
            assert rendered.template is None
            assert rendered == _render_allow(decision)


def test_a_new_principal_object_never_gets_an_old_template() -> None:
    """Templates are keyed by the principal's identity: an equal but new Principal (a new
    token of the same subject) gets its own, and the answers stay the full rendering's."""
    for n in range(3):
        twin = principal("alice-twin")
        decision = allow(twin, f"{n:032x}")
        render(decision, SETTINGS)
        assert render(decision, SETTINGS) == _render_allow(decision)


@given(
    subject=st.text(min_size=1, max_size=40),
    groups=st.frozensets(st.text(min_size=1, max_size=12), max_size=4),
    decision_ids=st.lists(
        st.text(alphabet="0123456789abcdef", min_size=32, max_size=32), min_size=1, max_size=4
    ),
)
def test_any_principal_renders_the_same_from_its_template(
    subject: str, groups: frozenset[str], decision_ids: list[str]
) -> None:
    who = principal(subject, groups)
    for decision_id in decision_ids * 2:
        decision = allow(who, decision_id)
        rendered = render(decision, SETTINGS)
        assert rendered == _render_allow(decision)
        assert http_wire.response_head(rendered) == reference_head(rendered)
        encoded = grpc_wire.encode_response(rendered, "allowed")
        expected = grpc_wire.to_check_response(_render_allow(decision), "allowed")
        assert pb.CheckResponse.FromString(encoded) == expected


def test_denials_encode_as_to_check_response() -> None:
    decision = Decision(False, Reason.TOKEN_MISSING, "d" * 32, "v1")
    rendered = render(decision, SETTINGS)
    encoded = grpc_wire.encode_response(rendered, decision.reason.value)
    assert (
        encoded == grpc_wire.to_check_response(rendered, decision.reason.value).SerializeToString()
    )
