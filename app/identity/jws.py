"""A JWS in compact serialization (RFC 7515 §7.1): read once, verified with PyJWT's algorithms.

PyJWT's own decoder checks every base64url character in a Python generator and, used as
"read the header to find the key, then decode with the key", parses each token twice: about
85 of the 105 µs an RS256 token cost, against 20 µs for the signature itself. Here the three
segments are matched by one compiled expression, decoded once (JSON by orjson, and by Python's
parser where only it keeps an integer beyond 64 bits exact), and the signature is checked by
the PyJWK's own ``Algorithm`` (PyJWT over ``cryptography``), bound to the one algorithm the
key was loaded for, exactly as ``jwt.decode`` does with a PyJWK.

Stricter than PyJWT, never looser: segments are base64url without padding (RFC 7515 §2; the
signature may carry the '=' padding some issuers add), the header and payload must be JSON
objects, ``kid`` must be a string, and any ``crit`` or a ``b64: false`` header is refused
(no extension is understood, RFC 7515 §4.1.11 and RFC 7797 §3).

The header and payload must be I-JSON (RFC 7493), which every JWT issuer writes; anything else
is ``token_malformed``, before any key is looked up:

- UTF-8 without a byte order mark (RFC 7519 §7.2 step 4 and 8, RFC 8259 §8.1): no UTF-16 or
  UTF-32, however Python's own parser would guess it;
- no lone surrogate (``"\\ud800"``; RFC 7493 §2.1): a claim must be text that can be written
  to a header or a log line;
- numbers that are numbers (RFC 8259 §6): no ``NaN``, ``Infinity`` or a literal that
  overflows a double (``1e400``);
- no duplicate member name, in any object (RFC 7515 §4 and RFC 7519 §4 allow either refusing
  or "last one wins"; refusing keeps every reader of the token, upstreams included, on the
  same claims);
- nested at most ``MAX_DEPTH`` arrays and objects deep, measured before parsing, so a
  thousand-level document costs one scan instead of a RecursionError.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

import jwt
import orjson

from app.identity.errors import TokenError
from app.json_depth import may_nest_deeper, nesting_depth
from app.reasons import Reason

_COMPACT = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)=?=?")


@dataclass(frozen=True, slots=True)
class Compact:
    """A parsed, not yet verified, JWS. Nothing here is trusted before ``verify_signature``."""

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"===", b"==", b"=")  # by length % 4 (1 is never valid base64)


def _segment(text: str, what: str) -> bytes:
    """A base64url segment decoded: what ``base64.urlsafe_b64decode`` does, without its
    generic argument handling (three segments per token)."""
    try:
        raw = text.encode("ascii").translate(_STANDARD) + _PADDING[len(text) % 4]
        return binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError):
        raise TokenError(Reason.TOKEN_MALFORMED, f"{what} is not base64url") from None


def _object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = _loads(raw)
    except ValueError:
        raise TokenError(Reason.TOKEN_MALFORMED, f"{what} is not I-JSON") from None
    if not isinstance(value, dict):
        raise TokenError(Reason.TOKEN_MALFORMED, f"{what} is not a JSON object")
    return value


# Arrays and objects nested deeper than this are refused. Claims nest a few levels (``cnf.jwk``,
# ``resource_access.<client>.roles``); a thousand levels would exhaust Python's recursion
# wherever the claims are walked (conditions, logs), so the bound is far below that.
MAX_DEPTH = 32
# orjson reads an integer beyond 64 bits as a float: a float this large may have been one.
_INEXACT = float(2**63)
_WHITESPACE = b" \t\n\r"


def _walk(value: Any) -> tuple[int, bool]:
    """The number of members of all the objects in a parsed value, and whether it holds a
    float beyond ±2**63 (iterative: the depth is bounded, but no recursion is needed)."""
    members = 0
    large = False
    stack = [value]
    while stack:
        item = stack.pop()
        values = item
        if type(item) is dict:
            members += len(item)
            values = item.values()
        for inner in values:
            kind = type(inner)
            if kind is dict or kind is list:
                stack.append(inner)
            elif kind is float and not -_INEXACT < inner < _INEXACT:
                large = True
    return members, large


def _names(raw: bytes) -> int:
    """At least the number of member names in ``raw``: every name ends with '"', whitespace
    and ':'; without the whitespace, each is a '":' (and so may be the end of a string)."""
    return raw.translate(None, _WHITESPACE).count(b'":')


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("duplicate member name")
    return value


def _loads(raw: bytes) -> Any:
    """``raw`` parsed as I-JSON (see the module's docstring); ValueError for anything else.

    orjson is strict RFC 8259 UTF-8 (it refuses a BOM, UTF-16, lone surrogates, NaN, Infinity
    and overflowing numbers) and parses. A text that may hold an integer beyond 64 bits (which
    orjson reads as a float) is parsed again by Python's parser, which keeps it exact, from the
    very text orjson accepted.

    Duplicate names: a parser keeps one member per name, so the parsed value has fewer members
    than ``raw`` names exactly when a name repeats. ``_names`` counts at least every name:
    equal counts prove there is none, at the cost of a scan; otherwise (a string value ending
    in '":' as well) Python's parser decides, with a hook that sees every pair.
    """
    if may_nest_deeper(raw, MAX_DEPTH) and nesting_depth(raw) > MAX_DEPTH:
        raise ValueError("nested too deeply")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("not I-JSON") from None
    members, large = _walk([value])  # in a list: a scalar document is walked too
    if large:
        value = json.loads(raw)
    if _names(raw) != members:
        json.loads(raw, object_pairs_hook=_refuse_duplicates)  # ValueError on a duplicate
    return value


def parse_compact(token: str) -> Compact:
    """Split and decode ``token`` (ASCII already checked); TokenError(TOKEN_MALFORMED) if it is
    not a three-segment JWS with JSON object header and payload."""
    match = _COMPACT.fullmatch(token)
    if match is None:
        raise TokenError(Reason.TOKEN_MALFORMED, "not a compact JWS of three base64url segments")
    return _parsed(token, match, _object(_segment(match.group(1), "header"), "header"))


def read_jws(token: str) -> Compact | None:
    """``parse_compact(token)`` when ``token`` ``looks_like_jws``, else None (an opaque token),
    with the expression matched and the header read once for both questions.

    Every token an issuer signs with one key has the same header, character for character: a
    header read before is not read again (``_HEADERS``, bounded; only headers that were read
    successfully, each kept as its own copy, so no caller's change could reach another)."""
    match = _COMPACT.fullmatch(token)
    if match is None:
        return None
    header_text = match.group(1)
    known = _HEADERS.get(header_text)
    if known is None:
        try:
            known = _object(_segment(header_text, "header"), "header")
        except TokenError:
            return None
        if len(_HEADERS) >= _MAX_HEADERS:
            _HEADERS.clear()
        _HEADERS[header_text] = known
    return _parsed(token, match, dict(known))


# Headers read by read_jws, by their base64url text: a handful per issuer (one per key).
_MAX_HEADERS = 256
_HEADERS: dict[str, dict[str, Any]] = {}


def _parsed(token: str, match: re.Match[str], header: dict[str, Any]) -> Compact:
    _, payload_text, signature_text = match.groups()
    if "kid" in header and not isinstance(header["kid"], str):
        raise TokenError(Reason.TOKEN_MALFORMED, "kid is not a string")
    if "crit" in header or header.get("b64", True) is not True:
        raise TokenError(Reason.TOKEN_MALFORMED, "crit and b64 headers are not supported")
    payload = _object(_segment(payload_text, "payload"), "payload")
    signing_input = token[: match.end(2)].encode("ascii")
    return Compact(header, payload, signing_input, _segment(signature_text, "signature"))


def looks_like_jws(token: str) -> bool:
    """Is ``token`` meant as a JWS: three base64url segments whose first is a JSON object?

    The same test oidc-provider applies before it refuses to introspect a JWT. Anything else
    is an opaque token (RFC 6750 b64token) to be introspected, if an issuer takes them; a
    token that passes this test but is broken further on is a malformed JWT, never sent to an
    authorization server.
    """
    match = _COMPACT.fullmatch(token)
    if match is None:
        return False
    try:
        _object(_segment(match.group(1), "header"), "header")
    except TokenError:
        return False
    return True


def verify_signature(token: Compact, key: jwt.PyJWK, alg: str) -> None:
    """Check the signature with ``key``, which must be bound to ``alg`` (the token's).

    The key was length-checked when the JWKS was loaded (app/identity/jwks.py). Raises
    TokenError(TOKEN_SIGNATURE_INVALID) when the signature does not verify.
    """
    if key.algorithm_name != alg:
        raise TokenError(Reason.TOKEN_ALGORITHM_NOT_ALLOWED, "the key is bound to another alg")
    algorithm = key.Algorithm
    if not algorithm.verify(token.signing_input, algorithm.prepare_key(key.key), token.signature):
        raise TokenError(Reason.TOKEN_SIGNATURE_INVALID, "signature verification failed")
