"""Device evidence from its three sources, normalized into one ``Device``.

1. **Identity token claims** (``evidence.token_claims[].device``): the IdP's own signed device
   context, read with the issuer's claim mapping (dotted paths reach nested claims). Trusted as
   far as the identity token is: it is already verified.
2. **A device attestation token** (``evidence.device_token``): a JWT from a device-trust
   provider in a configured header, verified with the provider's own keys by the same
   ``TokenVerifier`` and ``JwksCache`` as identity tokens (issuer, audience, algorithms,
   lifetime, signature), at most ``max_age`` old, whose ``sub`` is the device id. It counts
   only when **bound** to the identity token: the identity token's ``binding_claim`` equals its
   ``sub``, or the identity token's ``cnf.jkt`` is the RFC 7638 thumbprint of the key in the
   device token's ``cnf.jwk``. Invalid, stale or unbound device tokens are no evidence; the
   reason is kept so that a policy can say why.
3. **The client certificate** (``evidence.client_certificate.device_uri_prefix``): a URI SAN with
   the configured prefix names a device; Envoy verified the certificate against its CA.

When several sources describe a device, the attested one wins, then the identity token's claims,
then the certificate: the ``Device`` names its source, so policies can require one.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from app.evidence.model import Device, DeviceSource, country_code
from app.identity.claims import claim_at
from app.identity.errors import TokenError
from app.identity.principal import Principal
from app.identity.verify import TokenVerifier
from app.reasons import Reason
from app.settings import DeviceClaimNames, DeviceTokenSettings

log = logging.getLogger("ztauthz.evidence.device")

_MAX_EPOCH: Final = 2.0**53
# RFC 7638 §3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS: Final = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}
_THUMBPRINT_MEMBERS_OKP: Final = ("crv", "kty", "x")


# --- reading claims ------------------------------------------------------------------------------


def _bool_at(claims: Mapping[str, Any], path: str | None) -> bool | None:
    value = None if path is None else claim_at(claims, path)
    return value if isinstance(value, bool) else None


def _number_at(claims: Mapping[str, Any], path: str | None) -> float | None:
    value = None if path is None else claim_at(claims, path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and abs(value) < _MAX_EPOCH else None


def _text_at(claims: Mapping[str, Any], path: str | None) -> str | None:
    value = None if path is None else claim_at(claims, path)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return str(value)  # an OS version written as a number (e.g. 14.4)
    return value if isinstance(value, str) and value else None


class _Unreadable:
    """A claim that is there but cannot be read as what it should be."""


UNREADABLE: Final = _Unreadable()


def read_moment(value: Any) -> float | _Unreadable | None:
    """A moment claim: epoch seconds (a finite JSON number within ±2**53) or an RFC 3339
    date-time with an offset, as epoch seconds; None when the claim is absent (or null);
    UNREADABLE for anything else (another type, a date without offset, "yesterday")."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return UNREADABLE
        return moment.timestamp() if moment.tzinfo is not None else UNREADABLE
    if isinstance(value, bool) or not isinstance(value, int | float):
        return UNREADABLE
    if not (math.isfinite(value) and abs(value) < _MAX_EPOCH):
        return UNREADABLE
    return float(value)


def _moment_at(claims: Mapping[str, Any], path: str | None) -> float | None:
    moment = read_moment(None if path is None else claim_at(claims, path))
    return None if isinstance(moment, _Unreadable) else moment


def device_from_claims(
    device_id: str, claims: Mapping[str, Any], names: DeviceClaimNames, source: DeviceSource
) -> Device:
    """A Device whose attributes are read from verified ``claims`` with ``names``.

    A claim of the wrong type counts as unknown (None), never as a value.
    """
    os_name = _text_at(claims, names.os_name)
    return Device(
        id=device_id,
        source=source,
        managed=_bool_at(claims, names.managed),
        compliant=_bool_at(claims, names.compliant),
        os_name=None if os_name is None else os_name.lower(),
        os_version=_text_at(claims, names.os_version),
        disk_encrypted=_bool_at(claims, names.disk_encrypted),
        screen_lock=_bool_at(claims, names.screen_lock),
        risk_score=_number_at(claims, names.risk_score),
        assessed_at=_moment_at(claims, names.assessed_at),
    )


def identity_device(principal: Principal, names: DeviceClaimNames, id_claim: str) -> Device | None:
    """The device the identity token describes, or None when it names no device."""
    device_id = claim_at(principal.claims, id_claim)
    if not isinstance(device_id, str) or not device_id:
        return None
    return device_from_claims(device_id, principal.claims, names, "token_claims")


def certificate_device(uris: Iterable[str], prefix: str, managed: bool) -> Device | None:
    """The device a certificate's URI SAN names (``<prefix><id>``), or None."""
    for uri in uris:
        if uri.startswith(prefix) and len(uri) > len(prefix):
            return Device(
                id=uri[len(prefix) :],
                source="client_certificate",
                managed=True if managed else None,
            )
    return None


# --- binding -------------------------------------------------------------------------------------


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str | None:
    """RFC 7638 SHA-256 thumbprint (base64url, no padding) of a public JWK, or None."""
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS_OKP if kty == "OKP" else _THUMBPRINT_MEMBERS.get(str(kty))
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        return None
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def is_bound(
    identity_claims: Mapping[str, Any],
    device_id: str,
    device_claims: Mapping[str, Any],
    binding_claim: str,
) -> bool:
    """Does the identity token name this device, or bind the device token's key?"""
    named = claim_at(identity_claims, binding_claim)
    if isinstance(named, str) and named == device_id:
        return True
    cnf, device_cnf = identity_claims.get("cnf"), device_claims.get("cnf")
    if not isinstance(cnf, Mapping) or not isinstance(device_cnf, Mapping):
        return False
    jkt, jwk = cnf.get("jkt"), device_cnf.get("jwk")
    if not isinstance(jkt, str) or not isinstance(jwk, Mapping):
        return False
    thumbprint = jwk_thumbprint(jwk)
    return thumbprint is not None and thumbprint == jkt


# --- the attestation token -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attestation:
    """The outcome of one device token: a device, or the reason there is none."""

    device: Device | None = None
    problem: Reason | None = None
    country: str | None = None  # the token's signed location claim, if configured


NO_ATTESTATION: Final = Attestation()


class DeviceTokens:
    """Verifies device attestation tokens with the provider's keys and binds them."""

    def __init__(self, settings: DeviceTokenSettings, verifier: TokenVerifier) -> None:
        self.settings = settings
        self._verifier = verifier
        self._max_age = settings.max_age.total_seconds()
        self._leeway = settings.provider.leeway.total_seconds()

    @property
    def header(self) -> str:
        return self.settings.header

    async def attest(
        self, token: str | None, principal: Principal | None, now: float
    ) -> Attestation:
        """The device of ``token`` (the header's value), if it is valid, fresh and bound."""
        if token is None:
            return NO_ATTESTATION
        token = token.strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        try:
            verified = await self._verifier.verify(token, now)
        except TokenError as exc:
            log.info("device token refused: %s", exc.reason.value)
            return Attestation(problem=Reason.DEVICE_INVALID)
        if now - verified.issued_at > self._max_age + self._leeway:
            return Attestation(problem=Reason.DEVICE_STALE)
        if principal is None or not is_bound(
            principal.claims, verified.subject, verified.claims, self.settings.binding_claim
        ):
            return Attestation(problem=Reason.DEVICE_UNBOUND)
        assessed_at = self._posture_time(verified, now)
        if isinstance(assessed_at, _Unreadable):
            log.info("device token refused: its posture time is unreadable or in the future")
            return Attestation(problem=Reason.DEVICE_INVALID)
        device = device_from_claims(
            verified.subject, verified.claims, self.settings.claims, "device_token"
        )
        device = dataclasses.replace(device, assessed_at=assessed_at)
        country = None
        if self.settings.country is not None:
            country = country_code(claim_at(verified.claims, self.settings.country))
        return Attestation(device=device, country=country)

    def _posture_time(self, verified: Principal, now: float) -> float | _Unreadable | None:
        """When the device's posture was assessed: the posture time claim (unreadable, or
        later than ``now`` beyond the leeway, refuses the token), else the token's ``iat`` if
        ``posture_time_from_iat``, else unknown (None: no ``max_posture_age`` holds)."""
        path = self.settings.claims.assessed_at
        moment = read_moment(None if path is None else claim_at(verified.claims, path))
        if isinstance(moment, float) and moment - self._leeway > now:
            return UNREADABLE
        if moment is None and self.settings.posture_time_from_iat:
            return float(verified.issued_at)
        return moment
