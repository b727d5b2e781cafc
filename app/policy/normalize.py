"""Turn the request's raw path and host into the one form policies are matched against.

Policies match *decoded* paths segment by segment. Anything that two parsers could read two ways
is refused instead of guessed at, because ztauthz and the upstream must agree on what was asked
for (docs/security-hardening.md, "Path rule"). These are the product's rules for
``normalize_path``, applied in this order; the first five to fail refuse the path as invalid
(``path_rejected``), the last as ambiguous (``path_ambiguous``):

1. Strip the query string (everything from the first ``?``) and any ``#fragment``.
2. The path must start with ``/`` and be ASCII: a request-target is ASCII (RFC 3986 §2,
   RFC 9112 §3.2); other characters must be percent-encoded UTF-8.
3. Reject a backslash and any control character (C0, DEL; NUL included).
4. Reject malformed percent-encoding (``%`` not followed by two hex digits), and a
   percent-encoded ``/`` (``%2F``), ``\\`` (``%5C``), NUL (``%00``) or ``%`` (``%25``), in either
   case: an encoded separator means one segment to us and two to an upstream that decodes
   first, and an encoded ``%`` is double encoding (``%252e%252e`` is ``..`` to an upstream that
   decodes twice). ``%uXXXX`` is malformed.
5. Percent-decode everything else; the bytes must be valid UTF-8 (so no overlong form such as
   ``%C0%AE``) and must not decode to a control character (C0, DEL, C1).
6. After decoding, reject empty segments (``//``) and ``.`` or ``..`` segments (so ``%2e%2e``
   is refused too): ztauthz never resolves dot segments on the upstream's behalf.
7. Ambiguous: reject a segment that a common upstream reads as another segment:
   - a ``;`` (raw or ``%3B``): Servlet containers (Tomcat, Jetty, Spring) strip ``;params``
     from each segment, so ``..;x`` is ``..`` and ``admin;x`` is ``admin`` to them;
   - a trailing ``.`` or space: Windows/IIS trims them, so ``..%20`` and ``...`` are ``..``
     and ``admin.`` is ``admin``;
   - a non-ASCII character that Unicode NFKC normalization changes (U+FF0E fullwidth full
     stop is ``.``, U+2025 two-dot leader is ``..``, U+FF0F is ``/``, fullwidth letters are
     ASCII letters), or that is not a letter, mark or number (punctuation, symbols, spaces,
     format characters: U+2215 division slash is ``/`` to best-fit code-page conversion).
   Non-ASCII letters, marks and numbers that NFKC keeps as they are (``café``, ``日本``) pass.
8. Remove a single trailing slash (``/invoices/`` matches like ``/invoices``); ``/`` stays ``/``.

Rejections raise ``PathRejected`` whose ``detail`` is a short fixed text: it never contains the
path, so it is safe in logs and responses; its ``reason`` is ``path_rejected`` or
``path_ambiguous``.

``normalize_host`` lower-cases the host, removes the port (also from ``[v6]:port``) and one
trailing dot. It accepts DNS names (letters, digits, ``-``, ``_``), IPv4 and bracketed IPv6
(returned as ``[compressed-form]``); anything else raises ``ValueError`` with a fixed message.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from functools import lru_cache
from urllib.parse import unquote_to_bytes

from app.reasons import Reason

_RAW_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_FORBIDDEN_ESCAPE = re.compile(r"%(?:2[Ff]|5[Cc]|00|25)")
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_PORT = re.compile(r"[0-9]{1,5}")
_MAX_HOST = 253


class PathRejected(Exception):
    """The path cannot be matched safely. ``detail`` is fixed text, never the path itself;
    ``reason`` is ``path_rejected`` (invalid) or ``path_ambiguous`` (read differently by some
    upstream)."""

    def __init__(self, detail: str, reason: Reason = Reason.PATH_REJECTED) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason


def _ambiguous(detail: str) -> PathRejected:
    return PathRejected(detail, Reason.PATH_AMBIGUOUS)


def _strip_query_and_fragment(raw: str) -> str:
    cut = len(raw)
    for mark in ("?", "#"):
        index = raw.find(mark)
        if index != -1:
            cut = min(cut, index)
    return raw[:cut]


# A path the rules below leave as it is (but for one trailing slash): printable ASCII without
# '%', '\\', '?', '#' or ';', non-empty segments none of which ends with '.' (so none is '.'
# or '..'). Most paths are like this; matching them whole is the fast way to the same answer.
_PLAIN = re.compile(r"(?:/[A-Za-z0-9\-._~!$&'()*+,=:@]*[A-Za-z0-9\-_~!$&'()*+,=:@])+/?|/")


def normalize_path(raw: str) -> str:
    """The decoded, canonical path; raise ``PathRejected`` for anything ambiguous."""
    if _PLAIN.fullmatch(raw) is not None:
        return raw[:-1] if len(raw) > 1 and raw[-1] == "/" else raw
    return normalize_path_by_rules(raw)


def normalize_path_by_rules(raw: str) -> str:
    """``normalize_path`` applying every rule above in turn (it takes this way for any path
    that is not plainly canonical already)."""
    path = _strip_query_and_fragment(raw)
    if not path.startswith("/"):
        raise PathRejected("path must start with '/'")
    if not path.isascii():
        raise PathRejected("non-ASCII character in path")
    if "\\" in path:
        raise PathRejected("backslash in path")
    if _RAW_CONTROL.search(path):
        raise PathRejected("control character in path")
    if _MALFORMED_ESCAPE.search(path):
        raise PathRejected("malformed percent-encoding")
    if _FORBIDDEN_ESCAPE.search(path):
        raise PathRejected("percent-encoded '/', '\\', '%' or NUL")
    try:
        decoded = unquote_to_bytes(path).decode("utf-8")
    except UnicodeError:
        raise PathRejected("path is not valid UTF-8") from None
    if _CONTROL.search(decoded):
        raise PathRejected("percent-encoded control character")
    segments = decoded.split("/")[1:]
    if segments[-1] == "":
        segments.pop()  # one trailing slash; "/" becomes no segments at all
    for segment in segments:
        if segment == "":
            raise PathRejected("empty path segment")
        if segment in (".", ".."):
            raise PathRejected("dot segment in path")
    for segment in segments:
        _check_unambiguous(segment)
    return "/" + "/".join(segments)


# Unicode general categories of the non-ASCII characters a segment may hold: letters, marks and
# numbers. Punctuation (P*), symbols (S*), separators (Z*) and the rest (C*: format characters
# such as U+200B, private use, unassigned) are where the look-alikes of '.', '/' and '\\' live.
_WORD_CATEGORIES = frozenset("LMN")


def _check_unambiguous(segment: str) -> None:
    """Rule 7: refuse a segment that a common upstream reads as another one."""
    if ";" in segment:
        raise _ambiguous("path parameter (';') in path")
    if segment[-1] in ". ":
        raise _ambiguous("path segment ends with '.' or a space")
    if segment.isascii():
        return
    if unicodedata.normalize("NFKC", segment) != segment:
        raise _ambiguous("path segment changes under Unicode NFKC normalization")
    for char in segment:
        if not char.isascii() and unicodedata.category(char)[0] not in _WORD_CATEGORIES:
            raise _ambiguous("non-ASCII punctuation, symbol or space in path")


def _valid_port(port: str) -> bool:
    return _PORT.fullmatch(port) is not None and int(port) <= 65535


def _normalize_ipv6(raw: str) -> str:
    end = raw.find("]")
    if end == -1:
        raise ValueError("invalid host: unterminated '['")
    address, rest = raw[1:end], raw[end + 1 :]
    if rest and not (rest.startswith(":") and _valid_port(rest[1:])):
        raise ValueError("invalid host: bad port")
    if "%" in address:
        raise ValueError("invalid host: IPv6 zone identifiers are not accepted")
    try:
        parsed = ipaddress.IPv6Address(address)
    except ValueError:
        raise ValueError("invalid host: bad IPv6 address") from None
    return f"[{parsed.compressed}]"


@lru_cache(maxsize=1024)  # a deployment sees few hosts; errors are not cached
def normalize_host(raw: str) -> str:
    """Lower-case host without port or trailing dot; ``ValueError`` if empty or invalid."""
    if not raw:
        raise ValueError("empty host")
    if not raw.isascii():
        # Before lower(): Unicode case mapping turns e.g. KELVIN SIGN into an ASCII "k".
        raise ValueError("invalid host: only ASCII is accepted (use the IDNA/punycode form)")
    if raw.startswith("["):
        return _normalize_ipv6(raw)
    name = raw
    if ":" in raw:
        name, _, port = raw.rpartition(":")
        if ":" in name:
            raise ValueError("invalid host: IPv6 addresses must be in brackets")
        if not _valid_port(port):
            raise ValueError("invalid host: bad port")
    name = name.lower().removesuffix(".")
    if not name or len(name) > _MAX_HOST:
        raise ValueError("invalid host: empty or too long")
    if not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError("invalid host: only letters, digits, '-', '_' and '.' are allowed")
    return name
