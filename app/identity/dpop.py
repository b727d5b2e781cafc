"""DPoP proofs (RFC 9449): one proof checked against the request it came with. Pure: the
clock is passed in; the replay cache and the server nonces are the caller's (binding.py).

The checks of RFC 9449 §4.3, cheapest first (the RFC allows any order), each failure a
``DpopError`` with its own reason code:

1.  exactly one ``DPoP`` header (Envoy joins repeated header lines with ``,``, which never
    occurs in a compact JWS: a comma is two proofs) -> dpop_proof_missing / _multiple;
2.  a compact JWS with JSON object header and payload, within ``max_bytes`` -> _malformed;
3.  ``typ`` is ``dpop+jwt`` (§4.2) -> _type_invalid;
4.  ``alg`` is in the allowlist, which holds asymmetric algorithms only (never ``none`` or
    HMAC: the settings refuse them) -> _algorithm_not_allowed;
5.  the required claims ``jti``, ``htm``, ``htu``, ``iat`` and, with an access token, ``ath``
    (§4.2, §7) are present with the right types -> _malformed;
6.  ``htm`` is the request method (§4.3 item 8) -> _method_mismatch;
7.  ``htu`` is the target URI without query and fragment, both compared after RFC 3986 §6.2.2
    syntax-based and §6.2.3 scheme-based normalization (§4.3 item 9) -> _uri_mismatch;
8.  ``iat`` lies within [now - max_age, now + leeway] (§4.3 item 11, §11.1) -> _iat_invalid;
9.  ``ath`` is base64url(SHA-256(access token)) (§4.3 item 12, §7) -> _ath_mismatch;
10. ``jwk`` is a public key (no private members, §4.3 item 7) of the type and curve ``alg``
    needs, that imports and validates (joserfc, Authlib's JOSE sibling) -> _key_invalid;
11. the signature verifies with that key (PyJWT's algorithm, as for tokens) -> _signature_invalid.

The result carries the key's RFC 7638 thumbprint (joserfc), which the caller compares with the
token's ``cnf.jkt`` (§6.1), the ``jti`` for the replay cache and the ``nonce``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import JWKRegistry

from app.identity.errors import TokenError
from app.identity.jwks import KEY_TYPES, PRIVATE_MEMBERS, bind_key
from app.identity.jws import parse_compact, verify_signature
from app.reasons import Reason

PROOF_TYPES = frozenset({"dpop+jwt", "application/dpop+jwt"})  # RFC 7515 §4.1.9: compared
# case-insensitively, the "application/" prefix optional
MAX_JTI = 256  # characters: 96 random bits need 16 (RFC 9449 §4.2); more is abuse
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
# Absolute http(s) URI, RFC 3986 §3: scheme "://" authority path [? query] [# fragment].
_URI = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)(?:\?[^#]*)?(?:#.*)?",
    re.DOTALL,
)
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]@]+)(?::(?P<port>[0-9]*))?")

# Which WWW-Authenticate error code each reason answers with (RFC 9449 §7.1, §9).
INVALID_DPOP_PROOF = "invalid_dpop_proof"
USE_DPOP_NONCE = "use_dpop_nonce"
INVALID_TOKEN = "invalid_token"  # noqa: S105 - an RFC 6750 error code
CHALLENGE_ERRORS: dict[Reason, str] = {
    **{
        reason: INVALID_DPOP_PROOF
        for reason in (
            Reason.DPOP_PROOF_MISSING,
            Reason.DPOP_PROOF_MULTIPLE,
            Reason.DPOP_PROOF_MALFORMED,
            Reason.DPOP_PROOF_TYPE_INVALID,
            Reason.DPOP_PROOF_ALGORITHM_NOT_ALLOWED,
            Reason.DPOP_PROOF_KEY_INVALID,
            Reason.DPOP_PROOF_SIGNATURE_INVALID,
            Reason.DPOP_PROOF_METHOD_MISMATCH,
            Reason.DPOP_PROOF_URI_MISMATCH,
            Reason.DPOP_PROOF_IAT_INVALID,
            Reason.DPOP_PROOF_ATH_MISMATCH,
            Reason.DPOP_PROOF_REPLAYED,
        )
    },
    Reason.DPOP_NONCE_REQUIRED: USE_DPOP_NONCE,
    Reason.DPOP_KEY_MISMATCH: INVALID_TOKEN,
    Reason.DPOP_TOKEN_UNBOUND: INVALID_TOKEN,
    Reason.TOKEN_BOUND_AS_BEARER: INVALID_TOKEN,
    Reason.SENDER_CONSTRAINT_REQUIRED: INVALID_TOKEN,
}


class DpopError(TokenError):
    """A DPoP proof or binding was refused; ``reason`` says which check (never the proof)."""


@dataclass(frozen=True, slots=True)
class ProofRules:
    algorithms: frozenset[str]  # asymmetric only (app/settings/dpop.py enforces it)
    max_age: float  # seconds a proof's iat may lie in the past
    leeway: float  # seconds it may lie in the future (clock skew)
    max_bytes: int


@dataclass(frozen=True, slots=True)
class ProofRequest:
    """What the proof must describe: the request as Envoy saw it."""

    method: str
    uri: str | None  # the normalized target URI (target_uri); None: it cannot be known
    access_token: str


@dataclass(frozen=True, slots=True)
class Proof:
    """A proof whose every check of RFC 9449 §4.3 passed, except replay and nonce."""

    jkt: str  # RFC 7638 thumbprint of the proof's key, base64url
    jti: str
    iat: float
    nonce: str | None


def b64url_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def single_proof(value: str | None) -> str:
    """The one proof in the ``DPoP`` header value (RFC 9449 §4.3 items 1 and 2)."""
    if value is None or not value.strip(" \t"):
        raise DpopError(Reason.DPOP_PROOF_MISSING, "no DPoP header")
    if "," in value:
        raise DpopError(Reason.DPOP_PROOF_MULTIPLE, "more than one DPoP header")
    return value.strip(" \t")


def verify_proof(value: str | None, request: ProofRequest, rules: ProofRules, now: float) -> Proof:
    """Check the DPoP header ``value`` against ``request`` at ``now``; raise DpopError."""
    proof = single_proof(value)
    if len(proof) > rules.max_bytes or not proof.isascii():
        raise DpopError(Reason.DPOP_PROOF_MALFORMED, "too large or not ASCII")
    try:
        compact = parse_compact(proof)
    except TokenError as exc:
        raise DpopError(Reason.DPOP_PROOF_MALFORMED, exc.detail) from None
    header, claims = compact.header, compact.payload
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in PROOF_TYPES:
        raise DpopError(Reason.DPOP_PROOF_TYPE_INVALID, "typ is not dpop+jwt")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in rules.algorithms:
        raise DpopError(Reason.DPOP_PROOF_ALGORITHM_NOT_ALLOWED, "alg is not allowed")
    jti, htm, htu, iat, ath, nonce = _claims(claims)
    if htm != request.method:
        raise DpopError(Reason.DPOP_PROOF_METHOD_MISMATCH, "htm is not the request method")
    if request.uri is None:
        raise DpopError(Reason.DPOP_PROOF_URI_MISMATCH, "the request's URI is unknown")
    if normalize_uri(htu) != request.uri:
        raise DpopError(Reason.DPOP_PROOF_URI_MISMATCH, "htu is not the request URI")
    if not now - rules.max_age <= iat <= now + rules.leeway:
        raise DpopError(Reason.DPOP_PROOF_IAT_INVALID, "iat is outside the accepted window")
    expected_ath = b64url_sha256(request.access_token.encode("ascii"))
    if not hmac.compare_digest(ath.encode("ascii", "replace"), expected_ath.encode("ascii")):
        raise DpopError(Reason.DPOP_PROOF_ATH_MISMATCH, "ath is not the token's hash")
    key, jkt = _proof_key(header.get("jwk"), alg)
    try:
        verify_signature(compact, key, alg)
    except TokenError:
        raise DpopError(Reason.DPOP_PROOF_SIGNATURE_INVALID, "signature does not verify") from None
    return Proof(jkt=jkt, jti=jti, iat=iat, nonce=nonce)


def _claims(claims: dict[str, Any]) -> tuple[str, str, str, float, str, str | None]:
    jti, htm, htu = claims.get("jti"), claims.get("htm"), claims.get("htu")
    iat, ath, nonce = claims.get("iat"), claims.get("ath"), claims.get("nonce")
    for name, text in (("jti", jti), ("htm", htm), ("htu", htu), ("ath", ath)):
        if not isinstance(text, str) or not text:
            raise DpopError(Reason.DPOP_PROOF_MALFORMED, f"{name} is missing or not a string")
    assert isinstance(jti, str) and isinstance(htm, str) and isinstance(htu, str)
    assert isinstance(ath, str)
    if len(jti) > MAX_JTI:
        raise DpopError(Reason.DPOP_PROOF_MALFORMED, "jti is too long")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        raise DpopError(Reason.DPOP_PROOF_MALFORMED, "iat is missing or not a number")
    if nonce is not None and (not isinstance(nonce, str) or not nonce):
        raise DpopError(Reason.DPOP_PROOF_MALFORMED, "nonce is not a string")
    return jti, htm, htu, float(iat), ath, nonce


def _proof_key(jwk: Any, alg: str) -> tuple[jwt.PyJWK, str]:
    """The proof's public key bound to ``alg``, and its RFC 7638 thumbprint."""
    if not isinstance(jwk, dict):
        raise DpopError(Reason.DPOP_PROOF_KEY_INVALID, "jwk is missing or not an object")
    if PRIVATE_MEMBERS & jwk.keys():
        raise DpopError(
            Reason.DPOP_PROOF_KEY_INVALID, "jwk holds private or symmetric key material"
        )
    kty, curves = KEY_TYPES[alg]
    if jwk.get("kty") != kty or (curves is not None and jwk.get("crv") not in curves):
        raise DpopError(Reason.DPOP_PROOF_KEY_INVALID, "jwk does not suit alg")
    try:
        canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        raise DpopError(Reason.DPOP_PROOF_KEY_INVALID, "jwk is not plain JSON") from None
    bound = _import(canonical, alg)
    if bound is None:
        raise DpopError(Reason.DPOP_PROOF_KEY_INVALID, "jwk does not import as a valid key")
    return bound


@lru_cache(maxsize=1024)  # a client signs every proof with the same key
def _import(canonical: str, alg: str) -> tuple[jwt.PyJWK, str] | None:
    """joserfc imports and validates the key (e.g. an EC point on its curve) and computes the
    RFC 7638 thumbprint; PyJWT binds it to ``alg`` (RSA below 2048 bits refused)."""
    jwk = json.loads(canonical)
    try:
        with warnings.catch_warnings():
            # joserfc warns (SecurityWarning) about weak keys, e.g. RSA below 2048 bits: a
            # weak key is refused here, not logged and used.
            warnings.simplefilter("error", SecurityWarning)
            imported = JWKRegistry.import_key(jwk)
            thumbprint = imported.thumbprint()
    except (JoseError, SecurityWarning, ValueError, TypeError, KeyError):
        return None
    if imported.is_private:
        return None
    key = bind_key(jwk, alg)
    return None if key is None else (key, thumbprint)


@lru_cache(maxsize=4096)  # clients and routes repeat the same few URIs
def normalize_uri(uri: str) -> str | None:
    """An http(s) URI without query and fragment, normalized per RFC 3986 §6.2.2 (case of the
    scheme and host, percent-encoding case, unreserved characters decoded, dot segments
    removed) and §6.2.3 (default port dropped, empty path as "/"). None: not such a URI
    (user info, a non-numeric port, characters outside printable ASCII, another scheme)."""
    if not uri.isascii() or not uri.isprintable() or " " in uri:
        return None
    match = _URI.fullmatch(uri)
    if match is None:
        return None
    scheme = match["scheme"].lower()
    if scheme not in _DEFAULT_PORTS:
        return None
    authority = match["authority"]
    if "@" in authority:
        return None  # user info has no place in a request target (RFC 9110 §4.2.4)
    host_port = _HOST_PORT.fullmatch(authority)
    if host_port is None:
        return None
    host = _percent(host_port["host"]).lower()
    port = host_port["port"]
    if port is not None and port != "" and (len(port) > 5 or int(port) > 65535):
        return None
    if port and int(port) != int(_DEFAULT_PORTS[scheme]):
        host = f"{host}:{int(port)}"
    path = _remove_dot_segments(_percent(match["path"])) or "/"
    return f"{scheme}://{host}{path}"


def target_uri(scheme: str | None, host: str, path: str) -> str | None:
    """The normalized URI a client addressed: Envoy's scheme and host, the path without its
    query. None when the scheme is unknown or not http(s)."""
    if scheme is None:
        return None
    return normalize_uri(f"{scheme}://{host}{path}")


def _percent(text: str) -> str:
    """Percent-encodings upper-cased, and decoded where they stand for unreserved characters
    (RFC 3986 §6.2.2.1, §6.2.2.2)."""

    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _PERCENT.sub(fix, text)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4."""
    output: list[str] = []
    while path:
        if path.startswith("../"):
            path = path[3:]
        elif path.startswith("./") or path.startswith("/./"):
            path = path[2:]
        elif path == "/.":
            path = "/"
        elif path.startswith("/../"):
            path = path[3:]
            if output:
                output.pop()
        elif path == "/..":
            path = "/"
            if output:
                output.pop()
        elif path in (".", ".."):
            path = ""
        else:
            start = 1 if path.startswith("/") else 0
            end = path.find("/", start)
            end = len(path) if end < 0 else end
            output.append(path[:end])
            path = path[end:]
    return "".join(output)
