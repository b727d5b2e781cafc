"""Envoy's ``x-forwarded-client-cert`` (XFCC) header, parsed completely.

Format (Envoy's HTTP connection manager documentation): the header holds one *element* per
proxy hop, separated by ``,``; an element holds ``key=value`` pairs separated by ``;``. Keys are
``By`` (the URI SAN of the proxy's own certificate), ``Hash`` (SHA-256 of the client certificate,
hex), ``Cert`` and ``Chain`` (URL-encoded PEM), ``Subject``, ``URI`` and ``DNS`` (SANs of the
client certificate); ``By``, ``URI`` and ``DNS`` may repeat. A value containing ``,``, ``;``,
``=`` or ``"`` is double-quoted, with ``\\"`` (and ``\\\\``) escaped inside the quotes; Envoy
always quotes ``Subject``.

Parsing says nothing about trust: XFCC is a request header, and a client can send one. It is
only believed when Envoy is configured to replace it (``forward_client_cert_details:
SANITIZE_SET``) and the ztauthz configuration says so; see app/evidence/gather.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

MAX_HEADER: Final = 32 * 1024  # Envoy's default request header limit is 60 KiB in total
_SINGLE = {"hash": "hash", "cert": "cert", "chain": "chain", "subject": "subject"}
_REPEATED = {"by": "by", "uri": "uris", "dns": "dns"}


class XfccError(ValueError):
    """The header is not valid XFCC (the message never echoes the value)."""


@dataclass(frozen=True, slots=True)
class XfccElement:
    """One hop's description of its client certificate."""

    by: tuple[str, ...] = ()
    hash: str | None = None
    cert: str | None = None  # URL-encoded PEM, as sent
    chain: str | None = None  # URL-encoded PEM, as sent
    subject: str | None = None
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()

    @property
    def certificate_pem(self) -> str | None:
        return None if self.cert is None else unquote(self.cert)

    @property
    def chain_pem(self) -> str | None:
        return None if self.chain is None else unquote(self.chain)


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def done(self) -> bool:
        return self.at >= len(self.text)

    def peek(self) -> str:
        return self.text[self.at] if self.at < len(self.text) else ""

    def skip_spaces(self) -> None:
        while self.peek() in (" ", "\t") and not self.done():
            self.at += 1

    def key(self) -> str:
        start = self.at
        while not self.done() and self.peek() not in '=;,"':
            self.at += 1
        name = self.text[start : self.at].strip()
        if not name or self.peek() != "=":
            raise XfccError(f"expected key=value at offset {start}")
        self.at += 1  # '='
        return name

    def value(self) -> str:
        if self.peek() == '"':
            return self._quoted()
        start = self.at
        while not self.done() and self.peek() not in ";,":
            if self.peek() == '"':  # '=' is taken literally; a stray quote is not
                raise XfccError(f"a quote inside an unquoted value at offset {self.at}")
            self.at += 1
        return self.text[start : self.at].strip()

    def _quoted(self) -> str:
        self.at += 1  # opening quote
        out: list[str] = []
        while not self.done():
            char = self.text[self.at]
            if char == "\\":
                if self.at + 1 >= len(self.text):
                    break
                out.append(self.text[self.at + 1])
                self.at += 2
                continue
            self.at += 1
            if char == '"':
                self.skip_spaces()
                if not self.done() and self.peek() not in ";,":
                    raise XfccError(f"text after a closing quote at offset {self.at}")
                return "".join(out)
            out.append(char)
        raise XfccError("unterminated quoted value")


def parse_xfcc(header: str) -> tuple[XfccElement, ...]:
    """Every element of an XFCC header, in order (the last one is the nearest hop's).

    Keys are case-insensitive; unknown keys are ignored (Envoy may add new ones); a value may
    be empty. Raises XfccError for anything malformed: an empty element, a pair without ``=``,
    an unterminated quote, or a single-valued key given twice in one element.
    """
    if len(header) > MAX_HEADER:
        raise XfccError("header too large")
    reader = _Reader(header)
    elements: list[XfccElement] = []
    while True:
        single: dict[str, str] = {}
        repeated: dict[str, list[str]] = {"by": [], "uris": [], "dns": []}
        pairs = 0
        while True:
            reader.skip_spaces()
            key = reader.key().lower()
            value = reader.value()
            pairs += 1
            if key in _SINGLE:
                if _SINGLE[key] in single:
                    raise XfccError(f"{key} given twice in one element")
                single[_SINGLE[key]] = value
            elif key in _REPEATED:
                repeated[_REPEATED[key]].append(value)
            separator = reader.peek()
            if separator == ";":
                reader.at += 1
                continue
            break
        if pairs == 0:
            raise XfccError("empty element")
        elements.append(
            XfccElement(
                by=tuple(repeated["by"]),
                hash=single.get("hash"),
                cert=single.get("cert"),
                chain=single.get("chain"),
                subject=single.get("subject"),
                uris=tuple(repeated["uris"]),
                dns=tuple(repeated["dns"]),
            )
        )
        if reader.done():
            return tuple(elements)
        reader.at += 1  # ','
