"""The evidence step of a check: every configured source, once, into one ``Evidence`` value.

Only configured sources run; with none configured the pipeline skips this step entirely
(``build_gatherer`` returns None). Everything here reads what Envoy asserted or what a verified
signature covers, never a header a client can set on its own:

- client IP: Envoy's asserted peer plus X-Forwarded-For through the trusted proxies only;
- networks and country: derived from that address (the configured CIDRs, the GeoIP database);
- signed location claims: from the verified identity or (bound) device token;
- device: the bound device token, the verified identity token's claims, the client certificate;
- workload: the client certificate Envoy verified (gRPC fields, or XFCC only when Envoy
  sanitizes and sets it: ``forward_client_cert_details: SANITIZE_SET``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType

import httpx

from app.evidence.client_ip import ClientIpRules, client_ip
from app.evidence.device import (
    NO_ATTESTATION,
    Attestation,
    DeviceTokens,
    certificate_device,
    identity_device,
)
from app.evidence.geoip import GeoIp, GeoIpError
from app.evidence.model import Evidence, Location, WorkloadSource, country_code
from app.evidence.networks import NamedNetworks
from app.evidence.workload import certificate_uris, workload_from_uris
from app.evidence.xfcc import XfccError, parse_xfcc
from app.http_facts import FORWARDED_CLIENT_CERT
from app.identity.claims import claim_at
from app.identity.jwks import JwksCache, RefreshObserver
from app.identity.principal import Principal
from app.identity.verify import TokenVerifier
from app.request import RequestContext
from app.settings import (
    ClientCertificateSettings,
    ConfigError,
    EvidenceSettings,
    Settings,
    TokenClaimEvidence,
)

log = logging.getLogger("ztauthz.evidence")


class EvidenceGatherer:
    """The configured evidence sources; ``gather`` runs once per check."""

    def __init__(
        self,
        settings: EvidenceSettings,
        *,
        device_tokens: DeviceTokens | None = None,
        device_keys: JwksCache | None = None,
        geoip: GeoIp | None = None,
    ) -> None:
        self.settings = settings
        ip = settings.client_ip
        self._ip_rules = (
            None
            if ip is None
            else ClientIpRules(
                envoy_appends=ip.envoy_use_remote_address,
                trusted_hops=ip.trusted_hops,
                trusted_proxies=tuple(ip.trusted_proxies),
            )
        )
        self._networks = NamedNetworks.build(settings.networks) if settings.networks else None
        self._claims: Mapping[str, TokenClaimEvidence] = MappingProxyType(
            {entry.issuer: entry for entry in settings.token_claims}
        )
        self._certificates: ClientCertificateSettings | None = settings.client_certificate
        self._device_tokens = device_tokens
        self._device_keys = device_keys
        self.geoip = geoip

    async def start(self) -> None:
        if self._device_keys is not None:
            await self._device_keys.start()
        if self.geoip is not None:
            await self.geoip.start()

    async def aclose(self) -> None:
        if self._device_keys is not None:
            await self._device_keys.aclose()
        if self.geoip is not None:
            await self.geoip.aclose()

    async def gather(
        self, ctx: RequestContext, principal: Principal | None, now: float
    ) -> Evidence:
        attestation: Attestation = NO_ATTESTATION
        if self._device_tokens is not None:
            token = ctx.headers.get(self._device_tokens.header)
            attestation = await self._device_tokens.attest(token, principal, now)
        claimed = None if principal is None else self._claims.get(principal.issuer)
        device = attestation.device
        if device is None and claimed is not None and claimed.device is not None:
            assert principal is not None
            device = identity_device(principal, claimed.device, claimed.device.id)
        workload = None
        certificates = self._certificates
        if certificates is not None:
            uris, source = self._certificate_uris(ctx, certificates)
            workload = workload_from_uris(uris, source)
            prefix = certificates.device_uri_prefix
            if device is None and prefix is not None:
                device = certificate_device(uris, prefix, certificates.devices_are_managed)
        claim_country = attestation.country
        if claim_country is None and claimed is not None and claimed.country is not None:
            assert principal is not None
            claim_country = country_code(claim_at(principal.claims, claimed.country))
        return Evidence(
            device=device,
            device_problem=attestation.problem,
            location=self._location(ctx, claim_country),
            workload=workload,
        )

    def _location(self, ctx: RequestContext, claim_country: str | None) -> Location:
        address = None if self._ip_rules is None else client_ip(ctx, self._ip_rules)
        if address is None:
            country = claim_country if self.settings.location.country_from_claims else None
            return Location(claim_country=claim_country, country=country)
        ip_country = None if self.geoip is None else self.geoip.country(address)
        country = ip_country
        if country is None and self.settings.location.country_from_claims:
            country = claim_country
        return Location(
            client_ip=str(address),
            networks=frozenset() if self._networks is None else self._networks.names_of(address),
            ip_country=ip_country,
            claim_country=claim_country,
            country=country,
        )

    @staticmethod
    def _certificate_uris(
        ctx: RequestContext, settings: ClientCertificateSettings
    ) -> tuple[tuple[str, ...], WorkloadSource]:
        """The URI SANs of the client certificate Envoy verified, and where they came from."""
        if ctx.peer_certificate is not None:
            return certificate_uris(ctx.peer_certificate), "peer"
        if ctx.peer_principal is not None:
            return (ctx.peer_principal,), "peer"
        if ctx.transport != "http" or not settings.trust_xfcc:
            return (), "peer"
        header = ctx.headers.get(FORWARDED_CLIENT_CERT)
        if header is None:
            return (), "xfcc"
        try:
            elements = parse_xfcc(header)
        except XfccError as exc:
            log.info("x-forwarded-client-cert ignored: %s", exc)
            return (), "xfcc"
        if len(elements) != 1:
            # SANITIZE_SET leaves exactly one element: Envoy's own. Anything else means Envoy
            # is not configured as stated, and nothing in the header can be believed.
            log.warning("x-forwarded-client-cert ignored: %d elements, expected 1", len(elements))
            return (), "xfcc"
        return elements[0].uris, "xfcc"


def build_gatherer(
    settings: Settings,
    client: httpx.AsyncClient,
    clock: Callable[[], float],
    on_refresh: RefreshObserver | None = None,
) -> EvidenceGatherer | None:
    """The gatherer for the configured sources, or None when no evidence is configured.

    Raises ``ConfigError`` when the configured GeoIP database cannot be opened.
    """
    evidence = settings.evidence
    if not evidence.enabled:
        return None
    device_tokens = device_keys = None
    if evidence.device_token is not None:
        provider = evidence.device_token.provider
        device_keys = JwksCache(provider, client, clock, on_refresh=on_refresh)
        verifier = TokenVerifier(
            [provider], {provider.issuer: device_keys}, settings.token.max_bytes
        )
        device_tokens = DeviceTokens(evidence.device_token, verifier)
    geoip = None
    if evidence.geoip is not None:
        try:
            geoip = GeoIp(evidence.geoip.path, evidence.geoip.reload_interval.total_seconds())
        except GeoIpError as exc:
            raise ConfigError([f"evidence.geoip.path: {exc}"]) from None
    return EvidenceGatherer(
        evidence, device_tokens=device_tokens, device_keys=device_keys, geoip=geoip
    )
