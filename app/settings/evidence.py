"""Evidence sources: device posture, location and workload identity."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from app.durations import Duration
from app.http_facts import CREDENTIAL_HEADERS, FORWARDED_CLIENT_CERT, FORWARDED_FOR, HOST
from app.settings.base import Cidr, Model, claim_path
from app.settings.issuers import Issuer

_HEADER_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_NETWORK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_RESERVED_HEADERS = CREDENTIAL_HEADERS | {HOST, FORWARDED_FOR, FORWARDED_CLIENT_CERT}


class DeviceClaimNames(Model):
    """Where an issuer (or the device provider) puts device attributes: claim names or dotted
    paths into nested claims. A name left out means the source does not say."""

    managed: str | None = None
    compliant: str | None = None
    os_name: str | None = None
    os_version: str | None = None
    disk_encrypted: str | None = None
    screen_lock: str | None = None
    risk_score: str | None = None
    # When the posture was assessed: epoch seconds or an RFC 3339 date-time.
    assessed_at: str | None = None

    @field_validator("*")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return claim_path(value)


class IdentityDeviceClaims(DeviceClaimNames):
    """Device context in the identity tokens of one issuer; ``id`` names the device."""

    id: str

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return claim_path(value) or value


class TokenClaimEvidence(Model):
    """Evidence one identity issuer signs into its tokens."""

    issuer: str
    device: IdentityDeviceClaims | None = None
    country: str | None = None  # a signed location claim (ISO 3166-1 alpha-2)

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        return claim_path(value)


def _posture_defaults() -> DeviceClaimNames:
    return DeviceClaimNames(
        managed="managed",
        compliant="compliant",
        os_name="os.name",
        os_version="os.version",
        disk_encrypted="disk_encrypted",
        screen_lock="screen_lock",
        risk_score="risk_score",
        assessed_at="posture_time",
    )


class DeviceTokenSettings(Model):
    """Device attestation tokens: JWTs a device-trust provider (MDM, EDR) signs, sent in
    ``header``, verified with the provider's own keys, bound to the identity token.

    The posture time is the ``claims.assessed_at`` claim. A token that carries it unreadable
    (not epoch seconds, not an RFC 3339 date-time with an offset, or in the future) is no
    evidence (``device_invalid``); a token without it has a posture of unknown age, which no
    ``max_posture_age`` accepts, unless ``posture_time_from_iat`` says that this provider
    assesses the posture when it signs, so the token's ``iat`` is the posture time.
    """

    header: str = "x-device-token"
    provider: Issuer  # the provider as an issuer: its keys, audiences, algorithms, lifetime
    max_age: Duration = timedelta(minutes=10)  # since the token's iat
    binding_claim: str = "device_id"  # the identity token's claim naming the device
    claims: DeviceClaimNames = Field(default_factory=_posture_defaults)
    country: str | None = None  # a signed location claim in the device token
    posture_time_from_iat: bool = False  # without a posture time claim: the token's iat

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if _HEADER_NAME.fullmatch(value) is None:
            raise ValueError("expected a lower-case header name")
        if value in _RESERVED_HEADERS:
            raise ValueError(f"{value} carries other credentials; choose another header")
        return value

    @field_validator("binding_claim", "country")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return claim_path(value)

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(days=1):
            raise ValueError("must be between 1s and 1d")
        return value


# Envoy's HttpConnectionManager.forward_client_cert_details values.
ForwardClientCertDetails = Literal[
    "SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET", "ALWAYS_FORWARD_ONLY"
]


class ClientCertificateSettings(Model):
    """The client certificate Envoy verified (mTLS): workload identity and device certificates.

    Over gRPC the certificate comes from CheckRequest fields Envoy fills. Over HTTP it comes
    from ``x-forwarded-client-cert``, believed only when Envoy replaces that header itself:
    state Envoy's ``forward_client_cert_details`` here, and only ``SANITIZE_SET`` is trusted.
    """

    envoy_forward_client_cert_details: ForwardClientCertDetails = "SANITIZE"
    # A URI SAN starting with this prefix names a device (the rest is its id).
    device_uri_prefix: str | None = Field(default=None, min_length=1)
    # Every device certificate Envoy accepts comes from a managed device (the CA is the MDM's).
    devices_are_managed: bool = False

    @field_validator("envoy_forward_client_cert_details")
    @classmethod
    def _trustworthy(cls, value: str) -> str:
        if value in ("FORWARD_ONLY", "APPEND_FORWARD", "ALWAYS_FORWARD_ONLY"):
            raise ValueError(
                f"with {value} Envoy forwards the client's own x-forwarded-client-cert; "
                "use SANITIZE_SET in Envoy (and here) to have workload identity over HTTP"
            )
        return value

    @property
    def trust_xfcc(self) -> bool:
        return self.envoy_forward_client_cert_details == "SANITIZE_SET"


class ClientIpSettings(Model):
    """How the client address is found: Envoy's asserted peer, then X-Forwarded-For entries
    right to left through the trusted proxies (see app/evidence/client_ip.py)."""

    envoy_use_remote_address: bool = True  # as in Envoy: it appends its peer to X-Forwarded-For
    trusted_hops: int = Field(default=0, ge=0, le=16)
    trusted_proxies: list[Cidr] = Field(default_factory=list)


class GeoIpSettings(Model):
    """A MaxMind-format country database (GeoLite2/GeoIP2 Country or City)."""

    path: Path
    reload_interval: Duration = timedelta(minutes=1)

    @field_validator("reload_interval")
    @classmethod
    def _interval(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(days=1):
            raise ValueError("must be between 1s and 1d")
        return value


class LocationSettings(Model):
    # Use a signed location claim as the country when the IP address gives none.
    country_from_claims: bool = False


class EvidenceSettings(Model):
    """Device posture, location and workload evidence. Each source is off until configured;
    with nothing configured no evidence is gathered at all."""

    client_ip: ClientIpSettings | None = None
    networks: dict[str, list[Cidr]] = Field(default_factory=dict)
    geoip: GeoIpSettings | None = None
    location: LocationSettings = LocationSettings()
    token_claims: list[TokenClaimEvidence] = Field(default_factory=list)
    device_token: DeviceTokenSettings | None = None
    client_certificate: ClientCertificateSettings | None = None

    @field_validator("networks")
    @classmethod
    def _network_names(cls, value: dict[str, list[Cidr]]) -> dict[str, list[Cidr]]:
        for name, cidrs in value.items():
            if _NETWORK_NAME.fullmatch(name) is None:
                raise ValueError(f"network name {name!r}: expected lower-case letters, digits, '-'")
            if not cidrs:
                raise ValueError(f"network {name!r} lists no CIDR")
        return value

    @model_validator(mode="after")
    def _needs_client_ip(self) -> EvidenceSettings:
        if self.client_ip is None and (self.networks or self.geoip is not None):
            raise ValueError(
                "networks and geoip need evidence.client_ip (where the address is from)"
            )
        issuers = [entry.issuer for entry in self.token_claims]
        if len(issuers) != len(set(issuers)):
            raise ValueError("token_claims lists an issuer more than once")
        return self

    @property
    def enabled(self) -> bool:
        return bool(
            self.client_ip is not None
            or self.token_claims
            or self.device_token is not None
            or self.client_certificate is not None
        )
