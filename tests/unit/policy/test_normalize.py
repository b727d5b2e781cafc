from __future__ import annotations

import pytest

from app.policy.normalize import PathRejected, normalize_host, normalize_path
from app.reasons import Reason

ACCEPTED_PATHS = [
    ("/", "/"),
    ("/invoices", "/invoices"),
    ("/invoices/", "/invoices"),  # one trailing slash is dropped
    ("/invoices/42", "/invoices/42"),
    ("/invoices?x=1", "/invoices"),
    ("/invoices/?x=1&y=/../..", "/invoices"),  # the query is gone before any check
    ("/invoices#frag", "/invoices"),
    ("/a#frag?not-a-query", "/a"),
    ("/a?q#f", "/a"),
    ("/?", "/"),
    ("/Invoices", "/Invoices"),  # case is kept: matching is case-sensitive
    ("/caf%C3%A9", "/café"),  # percent-decoded UTF-8
    ("/%E6%97%A5%E6%9C%AC", "/日本"),  # NFKC-stable letters
    ("/%E0%A4%95%E0%A4%BF", "/\u0915\u093f"),  # a letter and a combining mark (Devanagari)
    ("/%7Euser", "/~user"),
    ("/a%20b", "/a b"),
    ("/a%2ab", "/a*b"),  # a decoded '*' is a literal character, never a wildcard
    ("/%3F", "/?"),  # an encoded '?' is part of the path, not a query
    ("/.well-known/openid-configuration", "/.well-known/openid-configuration"),
    ("/a/..b", "/a/..b"),  # not a dot segment, and no trailing dot
    ("/a/b.c", "/a/b.c"),
    ("/a%20b/c", "/a b/c"),  # an inner space is kept
    ("/a/.b", "/a/.b"),
]


@pytest.mark.parametrize(("raw", "expected"), ACCEPTED_PATHS)
def test_normalize_path_accepts(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


REJECTED_PATHS = [
    ("", "path must start with '/'"),
    ("invoices", "path must start with '/'"),
    ("?/a", "path must start with '/'"),
    ("http://example.com/a", "path must start with '/'"),
    ("*", "path must start with '/'"),
    ("/a\\b", "backslash in path"),
    ("\\a", "path must start with '/'"),
    ("/a\x00b", "control character in path"),
    ("/a\nb", "control character in path"),
    ("/a\tb", "control character in path"),
    ("/a\x7f", "control character in path"),
    ("/a\x85", "non-ASCII character in path"),
    ("/café", "non-ASCII character in path"),  # raw: RFC 3986 asks for percent-encoding
    ("/a%", "malformed percent-encoding"),
    ("/a%4", "malformed percent-encoding"),
    ("/a%zz", "malformed percent-encoding"),
    ("/a%%41", "malformed percent-encoding"),
    ("/a%2Fb", "percent-encoded '/', '\\', '%' or NUL"),
    ("/a%2fb", "percent-encoded '/', '\\', '%' or NUL"),
    ("/a%5Cb", "percent-encoded '/', '\\', '%' or NUL"),
    ("/a%5cb", "percent-encoded '/', '\\', '%' or NUL"),
    ("/a%00", "percent-encoded '/', '\\', '%' or NUL"),
    ("/%25", "percent-encoded '/', '\\', '%' or NUL"),  # double encoding is ambiguous
    ("/%252e%252e", "percent-encoded '/', '\\', '%' or NUL"),
    ("/a%0A", "percent-encoded control character"),
    ("/a%0d%0aSet-Cookie:x", "percent-encoded control character"),
    ("/a%7F", "percent-encoded control character"),
    ("/a%C2%85", "percent-encoded control character"),
    ("/a%FF", "path is not valid UTF-8"),
    ("/a%C3", "path is not valid UTF-8"),
    ("/a%C0%AF", "path is not valid UTF-8"),  # overlong "/"
    ("/a\udcff", "non-ASCII character in path"),  # lone surrogate
    ("/a%ED%A0%80", "path is not valid UTF-8"),  # an encoded surrogate
    ("/%u002e%u002e/admin", "malformed percent-encoding"),  # IIS %u escapes
    ("/a/%FF", "path is not valid UTF-8"),
    ("/a/%C0%AE%C0%AE", "path is not valid UTF-8"),  # overlong "..": a classic bypass
    ("//", "empty path segment"),
    ("//a", "empty path segment"),
    ("/a//b", "empty path segment"),
    ("/a//", "empty path segment"),
    ("/.", "dot segment in path"),
    ("/..", "dot segment in path"),
    ("/./a", "dot segment in path"),
    ("/a/./b", "dot segment in path"),
    ("/a/../b", "dot segment in path"),
    ("/a/..", "dot segment in path"),
    ("/a/../", "dot segment in path"),
    ("/%2e%2e/admin", "dot segment in path"),
    ("/%2E%2E", "dot segment in path"),
    ("/.%2e/x", "dot segment in path"),
    ("/%2e/x", "dot segment in path"),
]

AMBIGUOUS_PATHS = [
    # Servlet path parameters: Tomcat/Jetty/Spring strip ';...' from every segment
    ("/public/..;/admin", "path parameter (';') in path"),
    ("/public/..;jsessionid=1/admin", "path parameter (';') in path"),
    ("/public/%2e%2e;/admin", "path parameter (';') in path"),
    ("/public/..%3b/admin", "path parameter (';') in path"),
    ("/public/..%3B/admin", "path parameter (';') in path"),
    ("/public/.;/admin", "path parameter (';') in path"),
    ("/public;x=1/..;/admin", "path parameter (';') in path"),
    ("/admin;x=1/secret", "path parameter (';') in path"),
    ("/;/admin", "path parameter (';') in path"),
    # Windows/IIS trims trailing dots and spaces from a segment
    ("/public/..%20/admin", "path segment ends with '.' or a space"),
    ("/public/.%20/admin", "path segment ends with '.' or a space"),
    ("/public/.../admin", "path segment ends with '.' or a space"),
    ("/public/..../admin", "path segment ends with '.' or a space"),
    ("/admin./x", "path segment ends with '.' or a space"),
    ("/admin%20/x", "path segment ends with '.' or a space"),
    ("/a/b.", "path segment ends with '.' or a space"),
    # Unicode compatibility forms (NFKC) and look-alikes of '.', '/', '\\'
    ("/public/%EF%BC%8E%EF%BC%8E/admin", "path segment changes under Unicode NFKC normalization"),
    ("/public/%EF%BC%8F..%EF%BC%8Fadmin", "path segment changes under Unicode NFKC normalization"),
    ("/public/%E2%80%A5/admin", "path segment changes under Unicode NFKC normalization"),
    ("/public/%EF%BC%BC..x", "path segment changes under Unicode NFKC normalization"),
    ("/%EF%BD%81dmin", "path segment changes under Unicode NFKC normalization"),  # fullwidth a
    ("/e%CC%81", "path segment changes under Unicode NFKC normalization"),  # NFD, not NFC
    ("/%E2%84%AA", "path segment changes under Unicode NFKC normalization"),  # KELVIN SIGN
    ("/%C2%A0", "path segment changes under Unicode NFKC normalization"),  # NBSP
    ("/public/..%E2%88%95admin", "non-ASCII punctuation, symbol or space in path"),  # U+2215
    ("/public/..%E2%81%84admin", "non-ASCII punctuation, symbol or space in path"),  # U+2044
    ("/public/..%E2%88%96admin", "non-ASCII punctuation, symbol or space in path"),  # U+2216
    ("/%E2%82%AC/x", "non-ASCII punctuation, symbol or space in path"),  # any symbol
    ("/a%C2%A5b", "non-ASCII punctuation, symbol or space in path"),  # YEN SIGN: '\\' in cp932
    ("/a%E3%80%82b", "non-ASCII punctuation, symbol or space in path"),  # ideographic full stop
    ("/a%E2%80%8Bb", "non-ASCII punctuation, symbol or space in path"),  # zero-width space
    ("/a%EF%BB%BFb", "non-ASCII punctuation, symbol or space in path"),  # BOM
    ("/a%E2%80%AEb", "non-ASCII punctuation, symbol or space in path"),  # right-to-left override
]


@pytest.mark.parametrize(("raw", "detail"), AMBIGUOUS_PATHS)
def test_normalize_path_refuses_ambiguous_paths(raw: str, detail: str) -> None:
    with pytest.raises(PathRejected) as caught:
        normalize_path(raw)
    assert caught.value.detail == detail
    assert caught.value.reason is Reason.PATH_AMBIGUOUS


@pytest.mark.parametrize(("raw", "detail"), REJECTED_PATHS)
def test_invalid_paths_are_path_rejected(raw: str, detail: str) -> None:
    with pytest.raises(PathRejected) as caught:
        normalize_path(raw)
    assert caught.value.reason is Reason.PATH_REJECTED


@pytest.mark.parametrize(("raw", "detail"), REJECTED_PATHS)
def test_normalize_path_rejects(raw: str, detail: str) -> None:
    with pytest.raises(PathRejected) as caught:
        normalize_path(raw)
    assert caught.value.detail == detail
    assert str(caught.value) == detail


def test_rejection_detail_never_echoes_the_path() -> None:
    raw = "/secret-token-value/a%0d%0ainjected"
    with pytest.raises(PathRejected) as caught:
        normalize_path(raw)
    assert "secret" not in caught.value.detail
    assert "\n" not in caught.value.detail and "\r" not in caught.value.detail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com:8443", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:443", "example.com"),
        ("localhost", "localhost"),
        ("my_host.internal", "my_host.internal"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:9000", "127.0.0.1"),
        ("[::1]", "[::1]"),
        ("[::1]:8080", "[::1]"),
        ("[2001:DB8:0:0::1]:443", "[2001:db8::1]"),
        ("xn--caf-dma.example", "xn--caf-dma.example"),
    ],
)
def test_normalize_host_accepts(raw: str, expected: str) -> None:
    assert normalize_host(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        ".",
        ":443",
        "example.com:",
        "example.com:http",
        "example.com:99999",
        "example.com..",
        "a..b",
        ".example.com",
        "exa mple.com",
        "example.com/path",
        "user@example.com",
        "example.com\r\nx: y",
        "::1",
        "[::1",
        "[::1]x",
        "[::1]:",
        "[not-v6]",
        "[fe80::1%eth0]",
        "café.example",
        "\u212aelvin.example",  # KELVIN SIGN lower-cases to an ASCII "k"
        "a" * 64 + ".example",
        ("a" * 60 + ".") * 5,
    ],
)
def test_normalize_host_rejects(raw: str) -> None:
    with pytest.raises(ValueError) as caught:
        normalize_host(raw)
    if len(raw) > 3:
        assert raw not in str(caught.value)
