"""Subject identifiers: who or what a security event is about.

Simple subjects are RFC 9493 Subject Identifiers, a JSON object whose ``format`` member names
the members that follow (RFC 9493 §3.2): ``account`` (``uri``), ``email`` (``email``),
``iss_sub`` (``iss`` and ``sub``), ``opaque`` (``id``), ``phone_number`` (``phone_number``),
``did`` (``url``), ``uri`` (``uri``) and ``aliases`` (``identifiers``: simple identifiers of
other formats, never ``aliases`` again, RFC 9493 §3.2.8). Members a format does not define are
ignored, as SSF §4.2.3 asks of fields a receiver does not understand.

SSF 1.0 adds the ``jwt_id`` format (``iss`` and ``jti``: one token, SSF §3.5.1); its
``saml_assertion_id`` and ``ip-addresses`` formats are parsed and kept as ``Other``.

A complex subject (OpenID Shared Signals Framework 1.0, "Complex Subject Members", §3.3) has
``format: complex`` (drafts omitted it; both are read) and names parts of one subject, each a
simple identifier: ``user``, ``session``, ``device``, ``application``, ``tenant``,
``org_unit``, ``group``. Every part describes the same subject principal (§3.3.1); a part that
is absent is a wildcard (§8.1.3.1, Subject Matching). Members outside this list are kept by
name so that the receiver can refuse what the transmitter marks as critical (SSF §3.6 and §7.1:
``critical_subject_members`` in the transmitter's configuration metadata).

Everything here parses untrusted input: every value is type-checked, strings are bounded,
nothing is coerced. A subject that does not parse raises ``SubjectError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

MAX_VALUE = 1024  # characters in one identifier member: far above any real identifier
MAX_ALIASES = 16

COMPLEX_MEMBERS: Final = ("user", "session", "device", "application", "tenant", "org_unit", "group")


class SubjectError(ValueError):
    """A subject identifier that does not follow RFC 9493 / SSF (never includes its value)."""


@dataclass(frozen=True, slots=True)
class IssSub:
    """``iss_sub``: a subject ``sub`` in the namespace of issuer ``iss`` (RFC 9493 §3.2.3)."""

    iss: str
    sub: str


@dataclass(frozen=True, slots=True)
class Email:
    """``email`` (RFC 9493 §3.2.2): compared case-insensitively (``normalized``)."""

    email: str

    @property
    def normalized(self) -> str:
        return self.email.lower()


@dataclass(frozen=True, slots=True)
class Opaque:
    """``opaque`` (RFC 9493 §3.2.4): an identifier whose meaning both sides agreed on."""

    id: str


@dataclass(frozen=True, slots=True)
class JwtId:
    """``jwt_id`` (SSF §3.5.1): the token whose ``iss`` and ``jti`` these are."""

    iss: str
    jti: str


@dataclass(frozen=True, slots=True)
class Other:
    """``account``, ``phone_number``, ``did``, ``uri``, ``saml_assertion_id`` or
    ``ip-addresses``: parsed and kept; only ``uri`` (a device URI) is ever matched."""

    format: str
    value: str


@dataclass(frozen=True, slots=True)
class Aliases:
    """``aliases`` (RFC 9493 §3.2.8): several identifiers of one subject; any one matches."""

    identifiers: tuple[Simple, ...]


Simple = IssSub | Email | Opaque | JwtId | Other | Aliases


@dataclass(frozen=True, slots=True)
class Complex:
    """An SSF complex subject; each part is a simple identifier or None when absent.

    ``other`` names the members outside ``COMPLEX_MEMBERS``, in sorted order.
    """

    user: Simple | None = None
    session: Simple | None = None
    device: Simple | None = None
    application: Simple | None = None
    tenant: Simple | None = None
    org_unit: Simple | None = None
    group: Simple | None = None
    other: tuple[str, ...] = ()


Subject = Simple | Complex

# format -> the members it requires, in order (RFC 9493 §3.2).
_MEMBERS: Final[Mapping[str, tuple[str, ...]]] = {
    "account": ("uri",),
    "email": ("email",),
    "iss_sub": ("iss", "sub"),
    "opaque": ("id",),
    "phone_number": ("phone_number",),
    "did": ("url",),
    "uri": ("uri",),
    "jwt_id": ("iss", "jti"),
    "saml_assertion_id": ("issuer", "assertion_id"),
}


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise SubjectError(f"subject member {name!r} must be a non-empty string")
    if len(value) > MAX_VALUE:
        raise SubjectError(f"subject member {name!r} is longer than {MAX_VALUE} characters")
    return value


def parse_simple(value: Any, *, nested: bool = False) -> Simple:
    """One RFC 9493 Subject Identifier."""
    if not isinstance(value, dict):
        raise SubjectError("a subject identifier must be a JSON object")
    fmt = value.get("format")
    if not isinstance(fmt, str):
        raise SubjectError("a subject identifier needs a string 'format'")
    if fmt == "aliases":
        if nested:
            raise SubjectError("'aliases' identifiers cannot nest (RFC 9493 §3.2.8)")
        identifiers = value.get("identifiers")
        if not isinstance(identifiers, list) or not 0 < len(identifiers) <= MAX_ALIASES:
            raise SubjectError(f"'aliases' needs 1 to {MAX_ALIASES} 'identifiers'")
        return Aliases(tuple(parse_simple(item, nested=True) for item in identifiers))
    if fmt == "ip-addresses":
        addresses = value.get("ip-addresses")
        if not isinstance(addresses, list) or not 0 < len(addresses) <= MAX_ALIASES:
            raise SubjectError(f"'ip-addresses' needs 1 to {MAX_ALIASES} addresses")
        return Other(fmt, ",".join(_string(a, "ip-addresses") for a in addresses))
    members = _MEMBERS.get(fmt)
    if members is None:
        raise SubjectError("unsupported subject identifier format")
    values = [_string(value.get(name), name) for name in members]
    if fmt == "iss_sub":
        return IssSub(values[0], values[1])
    if fmt == "email":
        if "@" not in values[0]:
            raise SubjectError("subject member 'email' is not an email address")
        return Email(values[0])
    if fmt == "opaque":
        return Opaque(values[0])
    if fmt == "jwt_id":
        return JwtId(values[0], values[1])
    return Other(fmt, " ".join(values))


def parse_subject(value: Any) -> Subject:
    """A simple identifier, or an SSF complex subject (``format: complex``, or no format)."""
    if not isinstance(value, dict):
        raise SubjectError("a subject must be a JSON object")
    if value.get("format", "complex") != "complex":
        return parse_simple(value)
    parts = {name: parse_simple(value[name]) for name in COMPLEX_MEMBERS if name in value}
    if not parts:
        raise SubjectError("a complex subject names none of " + ", ".join(COMPLEX_MEMBERS))
    return Complex(
        user=parts.get("user"),
        session=parts.get("session"),
        device=parts.get("device"),
        application=parts.get("application"),
        tenant=parts.get("tenant"),
        org_unit=parts.get("org_unit"),
        group=parts.get("group"),
        other=tuple(sorted(str(n) for n in value if n not in COMPLEX_MEMBERS and n != "format")),
    )


def alternatives(subject: Simple) -> tuple[Simple, ...]:
    """The identifiers ``subject`` stands for: its aliases, or itself."""
    return subject.identifiers if isinstance(subject, Aliases) else (subject,)
