"""The forwarding headers under hostile input: X-Forwarded-For (with the asserted peer) and
x-forwarded-client-cert. (Authorization and cookies: test_fuzz_tokens.py.)

Invariants: nothing but XfccError escapes the XFCC parser, and what Envoy writes parses back
to what it meant; the client address is the asserted peer or an X-Forwarded-For entry reached
through trusted proxies only, never a claim left of an untrusted address.
"""

from __future__ import annotations

import ipaddress

from hypothesis import example, given
from hypothesis import strategies as st

from app.evidence.client_ip import (
    ClientIpRules,
    forwarded_entries,
    parse_address,
    resolve_client_ip,
)
from app.evidence.xfcc import MAX_HEADER, XfccElement, XfccError, parse_xfcc

TRUSTED = ipaddress.ip_network("10.0.0.0/8")
addresses = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["10.0.0.1", "10.1.2.3", "203.0.113.9", "[2001:db8::1]:443", "1.2.3.4:80"]),
    st.text(max_size=12),
)


@given(
    st.one_of(st.none(), addresses),
    st.one_of(st.none(), st.lists(addresses, max_size=40).map(", ".join), st.text(max_size=60)),
    st.integers(min_value=0, max_value=4),
    st.booleans(),
    st.booleans(),
)
@example("10.0.0.1", "6.6.6.6, 203.0.113.9, 10.1.2.3, 10.0.0.9", 0, True, True)
def test_the_client_address_is_never_a_claim_beyond_an_untrusted_hop(
    peer: str | None, xff: str | None, hops: int, envoy_appends: bool, trust_proxies: bool
) -> None:
    rules = ClientIpRules(envoy_appends, hops, (TRUSTED,) if trust_proxies else ())
    found = resolve_client_ip(peer, xff, rules)
    if found is None:
        return
    assert peer is not None
    chain = [parse_address(peer)]
    entries = forwarded_entries(xff)
    if envoy_appends and entries:
        entries = entries[:-1]
    chain += [parse_address(entry) for entry in reversed(entries)]
    # Walk from the peer: each step must have been through a trusted hop.
    position = chain.index(found) if found in chain else -1
    assert position >= 0, (found, chain)
    for step, address in enumerate(chain[:position]):
        assert address is not None
        assert step < hops or rules.is_trusted_proxy(address), (step, address)


values = st.text(max_size=20)
elements = st.builds(
    XfccElement,
    by=st.lists(values, max_size=2).map(tuple),
    hash=st.one_of(st.none(), values),
    cert=st.one_of(st.none(), values),
    subject=st.one_of(st.none(), values),
    uris=st.lists(values, max_size=2).map(tuple),
    dns=st.lists(values, max_size=2).map(tuple),
)


def envoy_writes(element: XfccElement) -> str:
    """An element as Envoy writes it: quoted when needed, '\\\\' and '"' escaped inside."""

    def value(text: str) -> str:
        if any(c in text for c in ',;="\\') or text != text.strip():
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return text

    pairs = [f"By={value(v)}" for v in element.by]
    for key, single in (
        ("Hash", element.hash),
        ("Cert", element.cert),
        ("Subject", element.subject),
    ):
        if single is not None:
            pairs.append(f"{key}={value(single)}")
    pairs += [f"URI={value(v)}" for v in element.uris]
    pairs += [f"DNS={value(v)}" for v in element.dns]
    return ";".join(pairs)


@given(st.lists(elements, min_size=1, max_size=3))
def test_what_envoy_writes_parses_back(written: list[XfccElement]) -> None:
    texts = [envoy_writes(element) for element in written]
    if any(text == "" for text in texts):
        return  # an element without pairs: not something Envoy writes
    assert parse_xfcc(",".join(texts)) == tuple(written)


@given(
    st.one_of(
        st.text(max_size=80),
        st.lists(
            st.sampled_from(['"', "\\\\", ";", ",", "=", "URI", "By", " ", "x"]), max_size=40
        ).map("".join),
    )
)
@example('URI="' + "\\\\" * 1000)
@example("x" * (MAX_HEADER + 1))
def test_any_header_parses_or_is_refused_with_xfccerror(header: str) -> None:
    try:
        parsed = parse_xfcc(header)
    except XfccError as exc:
        assert header not in str(exc) or len(header) < 3  # the message never echoes the value
        return
    assert parsed and all(isinstance(element, XfccElement) for element in parsed)
