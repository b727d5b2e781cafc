"""DPoP-bound tokens (RFC 9449) through real Envoy, over HTTP and gRPC ext_authz (the shipped
configurations): valid proofs of ES256, RS256 and EdDSA keys are allowed; every broken rule is
refused with its reason and the RFC's challenge; a bound token as a bearer token is refused;
the decision log says which check failed and never holds the token or the proof."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from app.dev.dpop import DROP, DpopKey
from app.dev.stack import Reply, Stack, http_request
from app.reasons import Reason

pytestmark = pytest.mark.integration

Mint = Callable[..., str]
PATH = "/invoices/42"
ALGS = 'algs="ES256 ES384 ES512 EdDSA PS256 PS384 PS512 RS256 RS384 RS512"'


def url(stack: Stack, path: str = PATH, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{stack.ports.envoy}{path}"


def send(
    stack: Stack, headers: Sequence[tuple[str, str]], method: str = "GET", path: str = PATH
) -> Reply:
    """One request to Envoy with ``headers`` as given, repeated names included."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.ports.envoy, timeout=10)
    try:
        conn.putrequest(method, path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


def dpop(token: str, proof: str) -> list[tuple[str, str]]:
    return [("Authorization", f"DPoP {token}"), ("DPoP", proof)]


def reached_upstream(reply: Reply) -> bool:
    body = reply.json()
    return isinstance(body, dict) and "header_list" in body


def refusal(reply: Reply) -> tuple[int, str, str]:
    """(status, reason, WWW-Authenticate) of a refusal that never reached the upstream."""
    assert not reached_upstream(reply)
    return reply.status, reply.json()["reason"], reply.headers.get("www-authenticate", "")


@pytest.fixture(scope="module")
def key() -> DpopKey:
    return DpopKey.generate("ES256")


@pytest.fixture
def bound(token: Mint, key: DpopKey) -> str:
    return token(extra_claims={"cnf": {"jkt": key.jkt}})


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_a_bound_token_with_a_valid_proof_is_allowed(stack: Stack, token: Mint, alg: str) -> None:
    key = DpopKey.generate(alg)
    bound = token(extra_claims={"cnf": {"jkt": key.jkt}})
    proof = key.proof("GET", url(stack), access_token=bound)
    reply = send(stack, dpop(bound, proof))
    assert reply.status == 200 and reached_upstream(reply), reply.body
    upstream = reply.json()["headers"]
    assert upstream["x-auth-subject"] == "alice"


def test_the_proof_may_name_the_query_and_default_port_differently(
    stack: Stack, bound: str, key: DpopKey
) -> None:
    htu = f"HTTP://127.0.0.1:{stack.ports.envoy}/invoices/./42?page=2#top"
    reply = send(stack, dpop(bound, key.proof("GET", htu, access_token=bound)))
    assert reply.status == 200 and reached_upstream(reply), reply.body


def _broken(stack: Stack, key: DpopKey, bound: str, **change: Any) -> str:
    kwargs: dict[str, Any] = {"access_token": bound}
    method = change.pop("method", "GET")
    target = change.pop("htu", url(stack))
    kwargs.update(change)
    return key.proof(method, target, **kwargs)


BROKEN_PROOFS: list[tuple[str, dict[str, Any], Reason]] = [
    ("another method", {"method": "POST"}, Reason.DPOP_PROOF_METHOD_MISMATCH),
    ("another path", {"htu": "PATH:/invoices/43"}, Reason.DPOP_PROOF_URI_MISMATCH),
    ("another scheme", {"htu": "SCHEME:https"}, Reason.DPOP_PROOF_URI_MISMATCH),
    ("too old", {"now": time.time() - 3600}, Reason.DPOP_PROOF_IAT_INVALID),
    ("from the future", {"now": time.time() + 3600}, Reason.DPOP_PROOF_IAT_INVALID),
    ("another token", {"access_token": "some.other.token"}, Reason.DPOP_PROOF_ATH_MISMATCH),
    ("no ath", {"claims": {"ath": DROP}}, Reason.DPOP_PROOF_MALFORMED),
    ("no jti", {"claims": {"jti": DROP}}, Reason.DPOP_PROOF_MALFORMED),
    ("typ JWT", {"headers": {"typ": "JWT"}}, Reason.DPOP_PROOF_TYPE_INVALID),
    ("no jwk", {"headers": {"jwk": DROP}}, Reason.DPOP_PROOF_KEY_INVALID),
]


@pytest.mark.parametrize(
    ("change", "reason"),
    [(c, r) for _, c, r in BROKEN_PROOFS],
    ids=[n for n, _, _ in BROKEN_PROOFS],
)
def test_each_broken_rule_is_refused_with_invalid_dpop_proof(
    stack: Stack, bound: str, key: DpopKey, change: dict[str, Any], reason: Reason
) -> None:
    change = dict(change)
    htu = change.get("htu")
    if isinstance(htu, str) and htu.startswith("PATH:"):
        change["htu"] = url(stack, htu.removeprefix("PATH:"))
    elif isinstance(htu, str) and htu.startswith("SCHEME:"):
        change["htu"] = url(stack, scheme=htu.removeprefix("SCHEME:"))
    proof = _broken(stack, key, bound, **change)
    status, got, challenge = refusal(send(stack, dpop(bound, proof)))
    assert (status, got) == (401, reason.value)
    assert challenge.startswith('DPoP realm="ztauthz", error="invalid_dpop_proof"')
    assert challenge.endswith(ALGS)


def test_a_replayed_proof_is_refused(stack: Stack, bound: str, key: DpopKey) -> None:
    proof = key.proof("GET", url(stack), access_token=bound)
    assert send(stack, dpop(bound, proof)).status == 200
    status, reason, challenge = refusal(send(stack, dpop(bound, proof)))
    assert (status, reason) == (401, Reason.DPOP_PROOF_REPLAYED.value)
    assert 'error="invalid_dpop_proof"' in challenge


def test_the_same_token_with_a_proof_from_another_key_is_refused(stack: Stack, bound: str) -> None:
    thief = DpopKey.generate("ES256")
    proof = thief.proof("GET", url(stack), access_token=bound)
    status, reason, challenge = refusal(send(stack, dpop(bound, proof)))
    assert (status, reason) == (401, Reason.DPOP_KEY_MISMATCH.value)
    assert challenge.startswith('DPoP realm="ztauthz", error="invalid_token"')


def test_a_bound_token_as_bearer_is_refused(stack: Stack, bound: str, key: DpopKey) -> None:
    proof = key.proof("GET", url(stack), access_token=bound)
    headers = [("Authorization", f"Bearer {bound}"), ("DPoP", proof)]
    status, reason, challenge = refusal(send(stack, headers))
    assert (status, reason) == (401, Reason.TOKEN_BOUND_AS_BEARER.value)
    assert challenge.startswith('DPoP realm="ztauthz", error="invalid_token"')
    assert ALGS in challenge


def test_a_dpop_token_without_cnf_jkt_is_refused(stack: Stack, token: Mint, key: DpopKey) -> None:
    unbound = token()
    proof = key.proof("GET", url(stack), access_token=unbound)
    status, reason, challenge = refusal(send(stack, dpop(unbound, proof)))
    assert (status, reason) == (401, Reason.DPOP_TOKEN_UNBOUND.value)
    assert 'error="invalid_token"' in challenge


def test_no_proof_is_refused(stack: Stack, bound: str) -> None:
    status, reason, _ = refusal(send(stack, [("Authorization", f"DPoP {bound}")]))
    assert (status, reason) == (401, Reason.DPOP_PROOF_MISSING.value)


def test_two_dpop_header_lines_are_two_proofs_and_refused(
    stack: Stack, bound: str, key: DpopKey
) -> None:
    first = key.proof("GET", url(stack), access_token=bound)
    second = key.proof("GET", url(stack), access_token=bound)
    headers = [("Authorization", f"DPoP {bound}"), ("DPoP", first), ("DPoP", second)]
    status, reason, _ = refusal(send(stack, headers))
    assert (status, reason) == (401, Reason.DPOP_PROOF_MULTIPLE.value)


def test_a_client_cannot_claim_https_with_its_own_x_forwarded_proto(
    stack: Stack, bound: str, key: DpopKey
) -> None:
    # Plain HTTP to Envoy: Envoy overwrites the client's x-forwarded-proto with "http", so a
    # proof for the https URI (made, say, for another deployment) does not pass here.
    proof = key.proof("GET", url(stack, scheme="https"), access_token=bound)
    headers = [*dpop(bound, proof), ("X-Forwarded-Proto", "https")]
    status, reason, _ = refusal(send(stack, headers))
    assert (status, reason) == (401, Reason.DPOP_PROOF_URI_MISMATCH.value)


def test_the_decision_log_names_the_check_and_never_the_token_or_proof(
    stack: Stack, bound: str, key: DpopKey
) -> None:
    proof = key.proof("POST", url(stack), access_token=bound)
    reply = send(stack, dpop(bound, proof))
    decision_id = reply.headers["x-auth-decision-id"]
    log = stack.log("ztauthz")
    line: dict[str, Any] | None = None
    deadline = time.monotonic() + 10
    while line is None and time.monotonic() < deadline:
        for text in log.read_text(encoding="utf-8").splitlines():
            if decision_id in text and json.loads(text).get("kind") == "decision":
                line = json.loads(text)
        if line is None:
            time.sleep(0.1)
    assert line is not None, "the decision was not logged"
    assert line["reason"] == Reason.DPOP_PROOF_METHOD_MISMATCH.value
    text = log.read_text(encoding="utf-8")
    for secret in (bound, proof, bound.split(".")[2], proof.split(".")[2]):
        assert secret not in text


def test_a_plain_bearer_token_is_unaffected(stack: Stack, token: Mint) -> None:
    reply = http_request(stack.ports.envoy, "GET", PATH, {"Authorization": f"Bearer {token()}"})
    assert reply.status == 200 and reached_upstream(reply)


def test_a_route_that_requires_dpop_refuses_a_bearer_token_and_allows_a_bound_one(
    stack: Stack, token: Mint, bound: str, key: DpopKey
) -> None:
    # tests/integration/policies/integration.yaml: POST /payments has sender_constrained: dpop.
    plain = token()
    refused = send(stack, [("Authorization", f"Bearer {plain}")], "POST", "/payments")
    status, reason, challenge = refusal(refused)
    assert (status, reason) == (401, Reason.SENDER_CONSTRAINT_REQUIRED.value)
    assert challenge.startswith('DPoP realm="ztauthz", error="invalid_token"')
    assert challenge.endswith(ALGS)
    proof = key.proof("POST", url(stack, "/payments"), access_token=bound)
    allowed = send(stack, dpop(bound, proof), "POST", "/payments")
    assert allowed.status == 200 and reached_upstream(allowed), allowed.body
