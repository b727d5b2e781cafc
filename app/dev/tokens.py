"""Mint dev access tokens, and forge bad ones for attack tests.

``mint`` signs a JWT access token (RFC 9068 shape: ``typ: at+jwt``) with the dev keys;
``identity_device_claims`` adds the device and location claims the demo configuration reads, and
``mint_device_token`` signs a device attestation token as a device-trust provider would. The
``forge_*`` and ``tamper_*`` helpers build tokens a correct verifier must refuse: ``alg: none``,
HS256 keyed with the RSA public key (algorithm confusion), an edited payload under the original
signature, and a corrupted signature.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import jwt

from app.dev.keys import DevKeys

CLIENT_ID: Final = "ztauthz-dev"


class _Drop(enum.Enum):
    DROP = "DROP"


DROP: Final = _Drop.DROP
"""Give as a claim (or header) value to remove that claim, e.g. ``{"exp": DROP}``."""


def standard_claims(
    *,
    issuer: str,
    audience: str | list[str],
    subject: str,
    groups: Sequence[str] = (),
    scopes: Sequence[str] = (),
    ttl: float = 300,
    now: float | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims ``mint`` signs: iss, sub, aud, iat, exp, jti, client_id, groups, scope.

    ``groups`` and ``scope`` appear only when non-empty. ``extra_claims`` add or override
    claims; a value of ``DROP`` removes the claim.
    """
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": list(audience) if isinstance(audience, list) else audience,
        "iat": issued,
        "exp": int(issued + ttl),
        "jti": str(uuid.uuid4()),
        "client_id": CLIENT_ID,
    }
    if groups:
        claims["groups"] = list(groups)
    if scopes:
        claims["scope"] = " ".join(scopes)
    return _apply(claims, extra_claims or {})


def mint(
    keys: DevKeys,
    *,
    issuer: str,
    audience: str | list[str],
    subject: str,
    groups: Sequence[str] = (),
    scopes: Sequence[str] = (),
    alg: str = "RS256",
    ttl: float = 300,
    now: float | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    headers: Mapping[str, Any] | None = None,
    typ: str | None = "at+jwt",
) -> str:
    """A signed dev access token. ``headers`` add or override header fields (``DROP`` removes
    one, e.g. ``{"kid": DROP}``); ``typ=None`` leaves the ``typ`` header out."""
    claims = standard_claims(
        issuer=issuer,
        audience=audience,
        subject=subject,
        groups=groups,
        scopes=scopes,
        ttl=ttl,
        now=now,
        extra_claims=extra_claims,
    )
    kid, key = keys.private_key_for(alg)
    header = _apply({"kid": kid, "typ": typ}, headers or {})
    header.setdefault("typ", None)  # a None typ is how PyJWT is told to leave it out
    return jwt.encode(claims, key, algorithm=alg, headers=header)


def identity_device_claims(
    device_id: str | None = None,
    *,
    country: str | None = None,
    managed: bool | None = None,
    compliant: bool | None = None,
    cnf_jkt: str | None = None,
) -> dict[str, Any]:
    """Claims an IdP puts in identity tokens about the device and location (for ``mint``'s
    ``extra_claims``): ``device_id`` (what binds a device token), ``device.managed``,
    ``device.compliant``, ``country``, and ``cnf.jkt`` (a key binding)."""
    claims: dict[str, Any] = {}
    if device_id is not None:
        claims["device_id"] = device_id
    device = {k: v for k, v in (("managed", managed), ("compliant", compliant)) if v is not None}
    if device:
        claims["device"] = device
    if country is not None:
        claims["country"] = country
    if cnf_jkt is not None:
        claims["cnf"] = {"jkt": cnf_jkt}
    return claims


def device_token_claims(
    *,
    issuer: str,
    audience: str | list[str],
    device_id: str,
    managed: bool | None = True,
    compliant: bool | None = True,
    os_name: str | None = "macOS",
    os_version: str | None = "14.4.1",
    disk_encrypted: bool | None = True,
    screen_lock: bool | None = True,
    risk_score: float | None = 10,
    assessed_at: float | None = None,
    country: str | None = None,
    ttl: float = 300,
    now: float | None = None,
    extra_claims: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The claims of a device attestation token: ``sub`` is the device id; posture claims are
    left out when given as None. ``assessed_at`` (the ``posture_time`` claim) defaults to now."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": device_id,
        "aud": list(audience) if isinstance(audience, list) else audience,
        "iat": issued,
        "exp": int(issued + ttl),
        "jti": str(uuid.uuid4()),
        "posture_time": int(issued if assessed_at is None else assessed_at),
    }
    posture: dict[str, Any] = {
        "managed": managed,
        "compliant": compliant,
        "disk_encrypted": disk_encrypted,
        "screen_lock": screen_lock,
        "risk_score": risk_score,
        "country": country,
    }
    claims.update({k: v for k, v in posture.items() if v is not None})
    os_claims = {k: v for k, v in (("name", os_name), ("version", os_version)) if v is not None}
    if os_claims:
        claims["os"] = os_claims
    return _apply(claims, extra_claims or {})


def mint_device_token(
    keys: DevKeys, *, alg: str = "ES256", headers: Mapping[str, Any] | None = None, **claims: Any
) -> str:
    """A signed dev device attestation token (``typ: JWT``); keyword arguments as
    ``device_token_claims``. Sign with the device provider's keys, not the IdP's."""
    kid, key = keys.private_key_for(alg)
    header = _apply({"kid": kid, "typ": "JWT"}, headers or {})
    return jwt.encode(device_token_claims(**claims), key, algorithm=alg, headers=header)


def certificate_thumbprint(pem: bytes) -> str:
    """base64url(SHA-256(DER)) of a PEM certificate: a token's ``cnf["x5t#S256"]`` binding it
    to that client certificate (RFC 8705 §3.1)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    return _b64(hashlib.sha256(der).digest())


def forge_alg_none(claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None) -> str:
    """An unsigned token (``alg: none``, empty signature)."""
    return jwt.encode(dict(claims), "", algorithm="none", headers=dict(headers or {}))


def forge_hs256_with_public_key(
    keys: DevKeys, claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None
) -> str:
    """Algorithm confusion: HS256 whose HMAC key is the RSA public key PEM, kid of the RSA key.

    Built by hand because PyJWT (rightly) refuses a PEM public key as an HMAC secret.
    """
    header = _apply({"alg": "HS256", "typ": "JWT", "kid": keys.rsa_kid}, headers or {})
    signing_input = _signing_input(header, dict(claims))
    signature = hmac.new(keys.public_pem("RS256"), signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{_b64(signature)}"


def tamper_payload(token: str, **changes: Any) -> str:
    """Edit the payload (``DROP`` removes a claim) but keep the original header and signature."""
    header_part, payload_part, signature_part = _split(token)
    payload = _apply(json.loads(_unb64(payload_part)), changes)
    return f"{header_part}.{_b64(_json(payload))}.{signature_part}"


def tamper_header(token: str, **changes: Any) -> str:
    """Edit the header (``DROP`` removes a field) but keep the original payload and signature."""
    header_part, payload_part, signature_part = _split(token)
    header = _apply(json.loads(_unb64(header_part)), changes)
    return f"{_b64(_json(header))}.{payload_part}.{signature_part}"


def tamper_signature(token: str) -> str:
    """Flip one bit of the signature; header and payload stay as they were."""
    header_part, payload_part, signature_part = _split(token)
    signature = bytearray(_unb64(signature_part))
    if not signature:
        raise ValueError("token has no signature to tamper with")
    signature[0] ^= 0x01
    return f"{header_part}.{payload_part}.{_b64(bytes(signature))}"


def _apply(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, value in changes.items():
        if value is DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def _split(token: str) -> tuple[str, str, str]:
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS (expected three dot-separated parts)")
    return parts[0], parts[1], parts[2]


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _signing_input(header: Mapping[str, Any], claims: Mapping[str, Any]) -> bytes:
    return f"{_b64(_json(header))}.{_b64(_json(claims))}".encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
