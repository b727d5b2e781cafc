"""How common upstreams read a raw request path: the oracle the path properties are checked
against, written apart from app/policy/normalize.py (and on purpose in another way).

``readings(raw)`` is the set of paths that some plausible upstream resolves ``raw`` to. Each
reading starts from the raw path (query and fragment cut) and applies what one family of
servers or frameworks does, then resolves dot segments (RFC 3986 §5.2.4), merges slashes and
drops one trailing slash, as they all do in the end:

- ``plain``: percent-decode once (RFC 3986), as most frameworks do;
- ``twice``: percent-decode twice (a proxy and an app each decode);
- ``servlet``: Tomcat/Jetty/Spring strip ``;params`` from every segment, before and after
  decoding;
- ``iis``: Windows/IIS turns ``\\`` into ``/``, decodes ``%uXXXX``, trims trailing dots and
  spaces from every segment;
- ``nfkc``: a framework that applies Unicode NFKC to the decoded path (U+FF0E is ``.``);
- ``bestfit``: a code-page conversion that maps look-alikes of ``.``, ``/`` and ``\\`` to them
  (U+2215 DIVISION SLASH is ``/``); only the separator look-alikes are modelled;
- ``overlong``: a lax UTF-8 decoder that accepts overlong forms (``%C0%AE`` is ``.``).

Not modelled: case-insensitive upstreams and code pages that fold letters (``é`` -> ``e``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

# Look-alikes that best-fit conversions (Windows code pages) turn into ASCII separators.
_BESTFIT = str.maketrans(
    {
        "\u2215": "/",  # DIVISION SLASH
        "\u2044": "/",  # FRACTION SLASH
        "\u29f8": "/",  # BIG SOLIDUS
        "\uff0f": "/",  # FULLWIDTH SOLIDUS
        "\u2216": "\\",  # SET MINUS
        "\u29f5": "\\",  # REVERSE SOLIDUS OPERATOR
        "\u29f9": "\\",  # BIG REVERSE SOLIDUS
        "\uff3c": "\\",  # FULLWIDTH REVERSE SOLIDUS
        "\u00a5": "\\",  # YEN SIGN (cp932)
        "\u20a9": "\\",  # WON SIGN (cp949)
        "\uff0e": ".",  # FULLWIDTH FULL STOP
        "\u2024": ".",  # ONE DOT LEADER
        "\u3002": ".",  # IDEOGRAPHIC FULL STOP
        "\uff61": ".",  # HALFWIDTH IDEOGRAPHIC FULL STOP
        "\ufe52": ".",  # SMALL FULL STOP
        "\u2025": "..",  # TWO DOT LEADER
    }
)
_U_ESCAPE = re.compile(r"%[uU]([0-9A-Fa-f]{4})")
_OVERLONG = re.compile(rb"[\xc0\xc1][\x80-\xbf]")


def _cut(raw: str) -> str:
    return re.split(r"[?#]", raw, maxsplit=1)[0]


def _bytes(text: str) -> bytes:
    """``text`` back to bytes; bytes a decode could not read (surrogate escapes) as they were."""
    return text.encode("utf-8", "surrogateescape")


def _decode(text: str) -> str:
    return unquote_to_bytes(_bytes(text)).decode("utf-8", "surrogateescape")


def _overlong_decode(text: str) -> str:
    data = unquote_to_bytes(_bytes(text))
    data = _OVERLONG.sub(
        lambda m: bytes([((m.group()[0] & 0x1F) << 6) | (m.group()[1] & 0x3F)]), data
    )
    return data.decode("utf-8", "surrogateescape")


def _strip_params(path: str) -> str:
    return "/".join(segment.split(";", 1)[0] for segment in path.split("/"))


def _iis_trim(path: str) -> str:
    """Trailing dots and spaces go; a segment of three or more dots is read as '..'."""
    out = []
    for segment in path.split("/"):
        trimmed = segment.rstrip(". ")
        if trimmed == "" and segment.strip(" ").startswith(".."):
            trimmed = ".."
        elif trimmed == "" and segment.startswith("."):
            trimmed = "."
        out.append(trimmed)
    return "/".join(out)


def resolve(path: str) -> str:
    """Dot segments removed (RFC 3986 §5.2.4, never above the root), empty segments merged,
    no trailing slash: the one form every reading ends in."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return "/" + "/".join(out)


READERS: dict[str, Callable[[str], str]] = {
    "plain": lambda raw: _decode(raw),
    "twice": lambda raw: _decode(_decode(raw)),
    "servlet": lambda raw: _strip_params(_decode(_strip_params(raw))),
    "iis": lambda raw: _iis_trim(
        _decode(_U_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), raw)).replace("\\", "/")
    ),
    "nfkc": lambda raw: unicodedata.normalize("NFKC", _decode(raw)),
    "bestfit": lambda raw: _decode(raw).translate(_BESTFIT).replace("\\", "/"),
    "overlong": lambda raw: _overlong_decode(raw),
}


def readings(raw: str) -> dict[str, str]:
    """Every modelled upstream's resolved path for ``raw``, by reader name."""
    path = _cut(raw)
    return {name: resolve(read(path)) for name, read in READERS.items()}


def distinct_readings(raw: str) -> set[str]:
    return set(readings(raw).values())
