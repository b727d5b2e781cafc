"""Envoy's x-forwarded-client-cert format: elements, pairs, repeated keys, quoting, escapes."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from app.evidence.xfcc import MAX_HEADER, XfccElement, XfccError, parse_xfcc

HASH = "468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        # Envoy's documented examples.
        (
            f'By=http://frontend.lyft.com;Hash={HASH};Subject="/C=US/ST=CA/L=San Francisco/'
            'OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com',
            (
                XfccElement(
                    by=("http://frontend.lyft.com",),
                    hash=HASH,
                    subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client",
                    uris=("http://testclient.lyft.com",),
                ),
            ),
        ),
        (
            f"By=http://frontend.lyft.com;Hash={HASH};URI=http://testclient.lyft.com,"
            f"By=http://backend.lyft.com;Hash={HASH};URI=http://frontend.lyft.com",
            (
                XfccElement(
                    by=("http://frontend.lyft.com",),
                    hash=HASH,
                    uris=("http://testclient.lyft.com",),
                ),
                XfccElement(
                    by=("http://backend.lyft.com",), hash=HASH, uris=("http://frontend.lyft.com",)
                ),
            ),
        ),
        (
            f'By=http://frontend.lyft.com;Hash={HASH};Subject="/C=US/ST=CA/L=San Francisco/'
            'OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com;DNS=lyft.com;DNS=www.lyft.com',
            (
                XfccElement(
                    by=("http://frontend.lyft.com",),
                    hash=HASH,
                    subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client",
                    uris=("http://testclient.lyft.com",),
                    dns=("lyft.com", "www.lyft.com"),
                ),
            ),
        ),
        # Repeated URI SANs, case-insensitive keys, unknown keys ignored.
        (
            "uri=spiffe://a.example/x;URI=urn:ztauthz:device:d1;Future=1",
            (XfccElement(uris=("spiffe://a.example/x", "urn:ztauthz:device:d1")),),
        ),
        # Quoted values hold separators and escaped quotes and backslashes.
        (
            'Subject="CN=a,O=b;c=d \\"q\\" \\\\ e";URI="spiffe://t/p"',
            (XfccElement(subject='CN=a,O=b;c=d "q" \\ e', uris=("spiffe://t/p",)),),
        ),
        # Cert and Chain are URL-encoded PEM.
        (
            f'Cert="{quote(PEM, safe="")}";Chain="{quote(PEM + PEM, safe="")}"',
            (XfccElement(cert=quote(PEM, safe=""), chain=quote(PEM + PEM, safe="")),),
        ),
        # Spaces a joining proxy may add between elements; empty values are values.
        (
            "URI=spiffe://a/b, URI=spiffe://c/d;DNS=",
            (
                XfccElement(uris=("spiffe://a/b",)),
                XfccElement(uris=("spiffe://c/d",), dns=("",)),
            ),
        ),
        # '=' inside an unquoted value is taken literally.
        ("URI=https://x.example/?a=b", (XfccElement(uris=("https://x.example/?a=b",)),)),
    ],
)
def test_parse(header: str, expected: tuple[XfccElement, ...]) -> None:
    assert parse_xfcc(header) == expected


def test_pem_accessors() -> None:
    (element,) = parse_xfcc(f'Cert="{quote(PEM, safe="")}"')
    assert element.certificate_pem == PEM
    assert element.chain_pem is None


@pytest.mark.parametrize(
    "header",
    [
        "",
        "URI",
        "URI=a;",
        "URI=a,",
        ";URI=a",
        "URI=a,,URI=b",
        "=value",
        'Subject="unterminated',
        'Subject="ends with a backslash\\',
        'Subject="a"b;URI=c',
        'URI=a"b',
        f"Hash={HASH};Hash={HASH}",
        "Subject=a;subject=b",
        "x" * (MAX_HEADER + 1),
    ],
)
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(XfccError):
        parse_xfcc(header)


def test_errors_do_not_echo_the_header() -> None:
    secret = "spiffe://secret.example/do-not-log"
    with pytest.raises(XfccError) as caught:
        parse_xfcc(f'URI="{secret}')
    assert secret not in str(caught.value)
