"""Whole checks under hostile input: the real pipeline (a Runtime with keys from in-process dev
issuers, every evidence source on), fed hostile requests as the HTTP transport and as the gRPC
mapping (``grpc_wire.to_context`` of generated CheckRequests) would give them.

Headers parsed here: Authorization, cookies, X-Forwarded-For, the asserted client address,
x-forwarded-client-cert (believed: SANITIZE_SET), the device token; over gRPC the peer address,
certificate and principal, and header_map's raw values.

Invariants, for every check:
- no ``internal_error`` decision, no 5xx at all (the keys are there: no fail-closed state);
- exactly one decision-log line and one metric sample, both saying what the decision says;
- the decision renders (HTTP and gRPC) without an exception, header values on one line;
- an allow is an allow its canonical equivalent (normalized method, host and path) gets too,
  by the same rule.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.check import Checker
from app.decision import Decision
from app.dev.issuer import create_issuer_app
from app.dev.keys import DevKeys
from app.dev.tokens import forge_alg_none, mint, mint_device_token, standard_claims
from app.policy.normalize import PathRejected, normalize_host, normalize_path
from app.protos import envoy_ext_authz_pb2 as external_auth_pb2
from app.reasons import Reason
from app.request import RequestContext, make_context
from app.settings import Settings
from app.state import Runtime
from app.telemetry.hub import Telemetry
from app.telemetry.tracing import Tracing
from app.transport import grpc_wire
from app.transport.render import render
from tests.fuzz.test_fuzz_paths import PIECES
from tests.unit.dev.dev_helpers import serving

POLICIES = Path(__file__).resolve().parent / "policies"
AUDIENCE = "https://api.example.com"
WORKER = "spiffe://example.org/ns/billing/sa/invoice-worker"
IDP_KEYS = DevKeys.generate()
MDM_KEYS = DevKeys.generate()


@dataclass
class Pipeline:
    loop: asyncio.AbstractEventLoop
    runtime: Runtime
    checker: Checker
    lines: io.StringIO
    idp: str
    mdm: str
    tokens: list[str]
    device_tokens: list[str]

    def check(self, ctx: RequestContext) -> Decision:
        return self.loop.run_until_complete(self.checker.check(ctx))

    def decided(self) -> dict[tuple[Reason, str], int]:
        return dict(self.runtime.telemetry.metrics.checks.decisions)

    def _lines(self) -> list[str]:
        """JSON lines end with '\\n' alone (str.splitlines would also split a line at a
        U+0085 or U+2028 inside a JSON string, where it is legal)."""
        self.runtime.telemetry.decision_log.flush()
        return self.lines.getvalue().split("\n")[:-1]

    def new_lines(self, before: int) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._lines()[before:]]

    def line_count(self) -> int:
        return len(self._lines())


def _tokens(idp: str, mdm: str) -> tuple[list[str], list[str]]:
    now = time.time()
    good = [
        mint(
            IDP_KEYS,
            issuer=idp,
            audience=AUDIENCE,
            subject="alice",
            groups=["finance"],
            scopes=["invoices:read"],
            ttl=3600,
            extra_claims={"device_id": "laptop-7"},
        ),
        mint(
            IDP_KEYS,
            issuer=idp,
            audience=AUDIENCE,
            subject="carol",
            groups=["contractors"],
            scopes=["invoices:read", "invoices:write"],
            alg="ES256",
            ttl=3600,
        ),
        mint(IDP_KEYS, issuer=idp, audience=AUDIENCE, subject='x\u00e9\u4e2d,;"', ttl=3600),
        forge_alg_none(standard_claims(issuer=idp, audience=AUDIENCE, subject="admin")),
        mint(MDM_KEYS, issuer=idp, audience=AUDIENCE, subject="mallory", ttl=3600),
        mint(IDP_KEYS, issuer=idp, audience=AUDIENCE, subject="old", now=now - 7200),
    ]
    devices = [
        mint_device_token(MDM_KEYS, issuer=mdm, audience=AUDIENCE, device_id="laptop-7", ttl=3600),
        mint_device_token(
            MDM_KEYS,
            issuer=mdm,
            audience=AUDIENCE,
            device_id="laptop-7",
            ttl=3600,
            extra_claims={"posture_time": "soon"},
        ),
        mint_device_token(MDM_KEYS, issuer=mdm, audience=AUDIENCE, device_id="laptop-9", ttl=3600),
        mint_device_token(IDP_KEYS, issuer=mdm, audience=AUDIENCE, device_id="laptop-7", ttl=3600),
    ]
    return good, devices


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    loop = asyncio.new_event_loop()
    with (
        serving(lambda url: create_issuer_app(IDP_KEYS, url)) as idp,
        serving(lambda url: create_issuer_app(MDM_KEYS, url)) as mdm,
    ):
        settings = Settings.model_validate(
            {
                "issuers": [{"issuer": idp, "audiences": [AUDIENCE], "max_token_lifetime": "2h"}],
                "policies": POLICIES,
                "token": {"cookie": "session"},
                "evidence": {
                    "client_ip": {"trusted_proxies": ["127.0.0.0/8"], "trusted_hops": 1},
                    "networks": {"corp": ["198.51.100.0/24"], "bad": ["203.0.113.0/25"]},
                    "token_claims": [
                        {"issuer": idp, "device": {"id": "device_id", "managed": "managed"}}
                    ],
                    "device_token": {
                        "provider": {
                            "issuer": mdm,
                            "audiences": [AUDIENCE],
                            "algorithms": ["ES256", "RS256"],
                            "max_token_lifetime": "2h",
                        },
                        "max_age": "1h",
                    },
                    "client_certificate": {
                        "envoy_forward_client_cert_details": "SANITIZE_SET",
                        "device_uri_prefix": "urn:device:",
                    },
                },
            }
        )
        lines = io.StringIO()
        telemetry = Telemetry.create(settings, tracing=Tracing(None), stream=lines)
        runtime = Runtime(settings, telemetry=telemetry)
        loop.run_until_complete(runtime.__aenter__())
        try:
            deadline = time.monotonic() + 10
            while not runtime.is_ready():
                assert time.monotonic() < deadline, "the dev issuer's keys did not load"
                loop.run_until_complete(asyncio.sleep(0.05))
            tokens, devices = _tokens(idp, mdm)
            yield Pipeline(loop, runtime, Checker(runtime), lines, idp, mdm, tokens, devices)
        finally:
            loop.run_until_complete(runtime.__aexit__(None, None, None))
            loop.close()


# --- what requests are made of ----------------------------------------------------------------

methods = st.one_of(
    st.sampled_from(["GET", "get", "POST", "DELETE", "PUT", "HEAD", "OPTIONS", "", "G\u00c9T"]),
    st.text(max_size=8),
)
hosts = st.one_of(
    st.sampled_from(
        [
            "api.example.com",
            "API.Example.COM:8443",
            "[::1]:80",
            "",
            "a..b",
            "x\u212a.com",
            "[fe80::1%eth0]",
        ]
    ),
    st.text(max_size=20),
)
paths = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=10).map(lambda parts: "/" + "".join(parts)),
    st.sampled_from(["/invoices", "/invoices/42", "/public/x", "/reports/q3", "/ledger/1", "/"]),
    st.text(max_size=30),
)
ips = st.one_of(
    st.sampled_from(
        ["127.0.0.1", "198.51.100.7", "203.0.113.9", "::1", "[2001:db8::1]:443", "::ffff:127.0.0.1"]
    ),
    st.ip_addresses().map(str),
    st.text(max_size=15),
)
xff = st.lists(ips, max_size=6).map(", ".join) | st.text(max_size=40)
xfcc_elements = st.one_of(
    st.sampled_from(
        [
            f"By=spiffe://example.org/envoy;URI={WORKER}",
            'Subject="CN=x,O=y";URI=spiffe://example.org/ns/other/sa/x',
            "URI=urn:device:kiosk-4;DNS=a.example",
            "Hash=abc;Hash=def",
            'URI="unterminated',
            "URI=spiffe://EXAMPLE.org/../x",
            ";;",
            "",
        ]
    ),
    st.text(max_size=30),
)
xfcc = st.lists(xfcc_elements, max_size=3).map(",".join)


@st.composite
def requests(draw: st.DrawFn, pipeline: Pipeline) -> dict[str, Any]:
    headers: dict[str, str] = {}
    token = st.sampled_from(pipeline.tokens)
    authorization = st.one_of(
        token.map(lambda t: f"Bearer {t}"),
        token.map(lambda t: f"bearer   {t}\t"),
        token.map(lambda t: f"Bearer {t[:-3]}"),
        st.sampled_from(["Bearer", "Basic YTpi", "Bearer a.b.c", "Bearer " + "A" * 9000]),
        st.text(max_size=40),
    )
    choices: dict[str, st.SearchStrategy[str]] = {
        "authorization": authorization,
        "cookie": st.one_of(
            token.map(lambda t: f"session={t}"),
            token.map(lambda t: f"a=1; session={t}; session={t}"),
            st.text(max_size=40),
        ),
        "x-forwarded-for": xff,
        "x-ztauthz-client-address": ips,
        "x-forwarded-client-cert": xfcc,
        "x-device-token": st.one_of(st.sampled_from(pipeline.device_tokens), st.text(max_size=30)),
        "traceparent": st.one_of(
            st.just("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), st.text(max_size=60)
        ),
        "b3": st.text(max_size=40),
        "x-auth-subject": st.just("admin"),
    }
    for name in draw(st.sets(st.sampled_from(sorted(choices)))):
        headers[name] = draw(choices[name])
    return {
        "method": draw(methods),
        "host": draw(hosts),
        "path": draw(paths),
        "headers": headers,
        "transport": draw(st.sampled_from(["http", "grpc"])),
        "source_address": draw(st.one_of(st.none(), ips)),
        "peer_principal": draw(st.one_of(st.none(), st.just(WORKER), st.text(max_size=30))),
        "peer_certificate": draw(st.one_of(st.none(), st.text(max_size=60))),
    }


def context(request: dict[str, Any]) -> RequestContext:
    grpc = request["transport"] == "grpc"
    return make_context(
        request["method"],
        request["host"],
        request["path"],
        request["headers"],
        request["transport"],
        source_address=request["source_address"] if grpc else None,
        peer_principal=request["peer_principal"] if grpc else None,
        peer_certificate=request["peer_certificate"] if grpc else None,
    )


# --- the invariants -------------------------------------------------------------------------


def check_once(pipeline: Pipeline, ctx: RequestContext) -> Decision:
    """One check, and everything that must hold of any check."""
    before_lines = pipeline.line_count()
    before = pipeline.decided()
    decision = pipeline.check(ctx)
    assert decision.reason is not Reason.INTERNAL_ERROR
    assert decision.status < 500, decision.reason
    (line,) = pipeline.new_lines(before_lines)
    assert line["decision_id"] == decision.decision_id
    assert line["reason"] == decision.reason.value
    assert line["status"] == decision.status
    assert line["decision"] == ("allow" if decision.allow else "deny")
    after = pipeline.decided()
    changed = {
        key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)
    }
    assert list(changed.values()) == [1] and next(iter(changed))[0] is decision.reason
    rendered = render(decision, pipeline.runtime.state.settings.response)
    for name, value in rendered.headers.items():
        assert value.isascii() and "\r" not in value and "\n" not in value, name
        value.encode("latin-1")
    grpc_wire.to_check_response(rendered, decision.reason.value).SerializeToString()
    return decision


def canonical(ctx: RequestContext) -> RequestContext | None:
    try:
        path = normalize_path(ctx.path)
        host = normalize_host(ctx.host)
    except (PathRejected, ValueError):
        return None
    return make_context(
        ctx.method,
        host,
        quote(path, safe="/"),
        dict(ctx.headers),
        ctx.transport,
        source_address=ctx.source_address,
        peer_principal=ctx.peer_principal,
        peer_certificate=ctx.peer_certificate,
    )


@given(st.data())
def test_any_request_is_decided_logged_counted_and_rendered(
    pipeline: Pipeline, data: st.DataObject
) -> None:
    ctx = context(data.draw(requests(pipeline)))
    decision = check_once(pipeline, ctx)
    if decision.allow:
        same = canonical(ctx)
        assert same is not None, "allowed, yet its path or host is refused"
        again = check_once(pipeline, same)
        assert (again.allow, again.rule_id) == (True, decision.rule_id)


KNOWN = [
    # The cases, as the transports would hand them over.
    {"path": "/public/..;/internal/x"},
    {"path": "/public/%2e%2e;/internal/x"},
    {"path": "/public/%EF%BC%8E%EF%BC%8E/internal/x"},
    {"path": "/public/..%20/internal/x"},
    {"path": "/public/x", "headers": {"authorization": "Bearer " + "W" * 9000}},
    {"path": "/public/x", "headers": {"x-forwarded-client-cert": 'URI="' + "\\" * 500}},
    {"path": "/public/x", "headers": {"x-forwarded-for": ",".join(["127.0.0.1"] * 100)}},
    {"path": "/ledger/1", "headers": {"x-forwarded-client-cert": f"URI={WORKER}"}},
]


@pytest.mark.parametrize("known", KNOWN, ids=lambda k: repr(k)[:60])
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_known_hostile_requests(pipeline: Pipeline, known: dict[str, Any], transport: str) -> None:
    ctx = make_context("GET", "api.example.com", known["path"], known.get("headers", {}), transport)
    decision = check_once(pipeline, ctx)
    assert not decision.allow or known["path"] == "/ledger/1"


# --- the gRPC mapping -----------------------------------------------------------------------

text = st.text(max_size=30)
header_pairs = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from([":path", "Host", "Authorization", "cookie", "X-Forwarded-For"]), text
        ),
        text,
    ),
    max_size=6,
)


@st.composite
def check_requests(draw: st.DrawFn, pipeline: Pipeline) -> Any:
    request = external_auth_pb2.CheckRequest()
    attributes = request.attributes
    if draw(st.booleans()):
        http = attributes.request.http
        http.method = draw(methods)
        http.host = draw(hosts)
        http.path = draw(paths)
        pairs = draw(header_pairs)
        if draw(st.booleans()):
            http.headers.update(dict(pairs))
            if draw(st.booleans()):
                http.headers["authorization"] = "Bearer " + draw(st.sampled_from(pipeline.tokens))
        else:
            for key, value in pairs:
                header = http.header_map.headers.add()
                header.key = key
                if draw(st.booleans()):
                    header.raw_value = draw(st.binary(max_size=20))
                else:
                    header.value = value
    if draw(st.booleans()):
        attributes.source.address.socket_address.address = draw(ips)
    if draw(st.booleans()):
        attributes.source.principal = draw(st.one_of(st.just(WORKER), text))
    if draw(st.booleans()):
        attributes.source.certificate = draw(text)
    for key, value in draw(st.dictionaries(text, text, max_size=2)).items():
        attributes.context_extensions[key] = value
    metadata = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["traceparent", "b3", "x"]), st.one_of(text, st.binary(max_size=8))
            ),
            max_size=3,
        )
    )
    return request, metadata


@given(st.data())
def test_any_check_request_maps_and_is_decided(pipeline: Pipeline, data: st.DataObject) -> None:
    request, metadata = data.draw(check_requests(pipeline))
    # What arrives is bytes: parse it as the server would, then map it.
    parsed = external_auth_pb2.CheckRequest.FromString(request.SerializeToString())
    ctx = grpc_wire.to_context(parsed, metadata)
    assert ctx.transport == "grpc"
    assert all(name == name.lower() and not name.startswith(":") for name in ctx.headers)
    check_once(pipeline, ctx)
