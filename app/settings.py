"""Configuration: one YAML file, every key overridable by a ZTAUTHZ_* environment variable.

Nested keys use ``__`` in environment names (``ZTAUTHZ_SERVER__CHECK__PORT=9001``); lists are
given as JSON (``ZTAUTHZ_ISSUERS='[{"issuer": ...}]'``). Validation happens once, at start:
an invalid configuration never serves.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.durations import Duration
from app.yamlsrc import Located, YamlError, load_single

# Asymmetric algorithms only: keys come from a public JWKS, so HMAC ("HS*") would let anyone
# holding the public key forge tokens, and "none" is no signature at all.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listener(_Model):
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)


class CheckListener(Listener):
    """Envoy's HTTP ext_authz (``http_service``). Disable it to serve gRPC only."""

    enabled: bool = True
    port: int = Field(default=9000, ge=0, le=65535)
    path_prefix: str = "/check"

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value == "":
            return value
        if not value.startswith("/") or value.endswith("/") or "?" in value:
            raise ValueError("must start with '/', not end with '/', and hold no query")
        return value


class AdminListener(Listener):
    port: int = Field(default=9100, ge=0, le=65535)


class GrpcListener(Listener):
    """Envoy's gRPC ext_authz (``envoy.service.auth.v3.Authorization``), beside or instead of
    the HTTP check listener, on its own port."""

    enabled: bool = False
    port: int = Field(default=9001, ge=0, le=65535)
    # A CheckRequest carries headers (Envoy caps them with max_request_headers_kb) and, with
    # include_peer_certificate, the client certificate: far below this bound.
    max_message_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)


class Server(_Model):
    check: CheckListener = CheckListener()
    admin: AdminListener = AdminListener()
    grpc: GrpcListener = GrpcListener()
    # How long in-flight checks may finish after SIGTERM before the listeners close.
    shutdown_grace: Duration = timedelta(seconds=5)

    @model_validator(mode="after")
    def _listeners(self) -> Server:
        if not (self.check.enabled or self.grpc.enabled):
            raise ValueError("enable at least one check listener: server.check or server.grpc")
        bound: list[tuple[str, Listener]] = [("check", self.check)] if self.check.enabled else []
        bound.append(("admin", self.admin))
        if self.grpc.enabled:
            bound.append(("grpc", self.grpc))
        seen: dict[tuple[str, int], str] = {}
        for name, listener in bound:
            key = (listener.host, listener.port)
            if listener.port and key in seen:
                raise ValueError(f"server.{name} and server.{seen[key]} use the same address")
            seen[key] = name
        return self


class ClaimNames(_Model):
    """Where this IdP puts groups and scopes (dotted paths reach into nested claims)."""

    groups: str = "groups"
    scopes: str = "scope"


class Jwks(_Model):
    refresh_interval: Duration = timedelta(minutes=5)
    max_staleness: Duration = timedelta(hours=24)
    kid_miss_min_interval: Duration = timedelta(seconds=30)
    fetch_timeout: Duration = timedelta(seconds=5)
    max_bytes: int = Field(default=512 * 1024, ge=1024)

    @model_validator(mode="after")
    def _sane(self) -> Jwks:
        second = timedelta(seconds=1)
        if self.refresh_interval < second or self.kid_miss_min_interval < second:
            # Below a second, refreshes and kid-miss refetches would hammer the IdP.
            raise ValueError("refresh_interval and kid_miss_min_interval must be at least 1s")
        if self.max_staleness < self.refresh_interval:
            raise ValueError("max_staleness must be at least refresh_interval")
        if not timedelta(0) < self.fetch_timeout <= self.refresh_interval:
            raise ValueError("fetch_timeout must be positive and at most refresh_interval")
        return self


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost", None):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(value: str, field: str) -> str:
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return value  # loopback only: local development and tests
    raise ValueError(f"{field} must be an https URL (plain http is accepted on loopback only)")


class Issuer(_Model):
    issuer: str
    discovery: bool = True  # false when jwks_uri is given
    jwks_uri: str | None = None
    audiences: list[str] = Field(min_length=1)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    max_token_lifetime: Duration = timedelta(minutes=15)
    leeway: Duration = timedelta(seconds=30)
    claims: ClaimNames = ClaimNames()
    jwks: Jwks = Jwks()

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return check_url(value, "issuer")

    @field_validator("jwks_uri")
    @classmethod
    def _jwks_uri(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, "jwks_uri")

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        bad = [alg for alg in value if alg not in SUPPORTED_ALGORITHMS]
        if bad:
            raise ValueError(
                f"unsupported algorithm(s) {bad}; allowed: {sorted(SUPPORTED_ALGORITHMS)} "
                "(never 'none', never HMAC with keys from a JWKS)"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _jwks_uri_pins_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("jwks_uri") is not None:
            if data.get("discovery") is True:
                raise ValueError("give either discovery: true or jwks_uri, not both")
            data = {**data, "discovery": False}
        return data

    @model_validator(mode="after")
    def _key_source(self) -> Issuer:
        if not self.discovery and self.jwks_uri is None:
            raise ValueError("set discovery: true or give jwks_uri")
        if self.max_token_lifetime <= timedelta(0):
            raise ValueError("max_token_lifetime must be positive")
        return self


class Token(_Model):
    """Where tokens are read from and how large they may be."""

    cookie: str | None = None
    max_bytes: int = Field(default=8192, ge=256, le=65536)
    # Verified tokens remembered (by SHA-256 digest, never the token) so that a repeated token
    # skips the signature check; exp/iat/nbf are checked again on every use, and a key change
    # drops the memory. 0 turns the cache off. About 2 KB per entry.
    cache_size: int = Field(default=10_000, ge=0, le=1_000_000)


_REALM = re.compile(r"[ !#-\[\]-~]+")


class Response(_Model):
    """What denials tell the client. Reason codes are always given; rule ids only on request."""

    include_rule: bool = False
    # Written into WWW-Authenticate as realm="...": visible ASCII and spaces, no quote or
    # backslash (nothing that could end the quoted string or the header).
    realm: str = Field(default="ztauthz", min_length=1, max_length=256)

    @field_validator("realm")
    @classmethod
    def _quotable(cls, realm: str) -> str:
        if not _REALM.fullmatch(realm):
            raise ValueError("must be visible ASCII or spaces, without '\"' or '\\'")
        return realm


class DecisionLogSettings(_Model):
    """The decision log: one JSON line per check on stdout, written off the request path."""

    # Fraction of allow lines written (denials are always written); 0 keeps denials only.
    allow_sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    # Lines waiting for the writer; beyond this they are dropped and counted, never blocking.
    queue_size: int = Field(default=10_000, ge=16, le=1_000_000)


class TelemetrySettings(_Model):
    """Decision log, and how subjects appear in logs and spans.

    Tracing is configured with the standard ``OTEL_*`` environment variables instead.
    Subjects are pseudonymized (HMAC-SHA256) when a key is named: the key itself is read from
    the environment variable or file named here, never from this configuration.
    """

    decision_log: DecisionLogSettings = DecisionLogSettings()
    subject_hash_key_env: str | None = Field(default=None, min_length=1)
    subject_hash_key_file: Path | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> TelemetrySettings:
        if self.subject_hash_key_env is not None and self.subject_hash_key_file is not None:
            raise ValueError("give subject_hash_key_env or subject_hash_key_file, not both")
        return self


class GrantSettings(_Model):
    """Just-in-time grants (``kind: Grant`` files beside the policies)."""

    # The longest a grant may last (expires - not_before); a longer grant fails to load.
    max_duration: Duration = timedelta(hours=8)

    @field_validator("max_duration")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=31):
            raise ValueError("must be between 1m and 31d")
        return value


class ReloadSettings(_Model):
    """Hot reload of the policy directory (and the candidate directory). SIGHUP always reloads;
    ``watch`` also reloads when files change."""

    watch: bool = True
    # How often the directories are checked for changes (file names, sizes, modification times).
    interval: Duration = timedelta(seconds=2)

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: timedelta) -> timedelta:
        if not timedelta(milliseconds=100) <= value <= timedelta(hours=1):
            raise ValueError("must be between 100ms and 1h")
        return value


# --- evidence (device posture, location, workload identity) -----------------------------------

_HEADER_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_NETWORK_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_RESERVED_HEADERS = frozenset(
    {"authorization", "cookie", "host", "x-forwarded-for", "x-forwarded-client-cert"}
)


def _cidr(value: Any) -> Any:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a CIDR such as 10.0.0.0/8 or 2001:db8::/32")
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR ({exc})") from None


Cidr = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_cidr)]


def _claim_path(value: str | None) -> str | None:
    if value is not None and (value == "" or "" in value.split(".")):
        raise ValueError("expected a claim name or a dotted path without empty parts")
    return value


class DeviceClaimNames(_Model):
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
        return _claim_path(value)


class IdentityDeviceClaims(DeviceClaimNames):
    """Device context in the identity tokens of one issuer; ``id`` names the device."""

    id: str

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _claim_path(value) or value


class TokenClaimEvidence(_Model):
    """Evidence one identity issuer signs into its tokens."""

    issuer: str
    device: IdentityDeviceClaims | None = None
    country: str | None = None  # a signed location claim (ISO 3166-1 alpha-2)

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        return _claim_path(value)


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


class DeviceTokenSettings(_Model):
    """Device attestation tokens: JWTs a device-trust provider (MDM, EDR) signs, sent in
    ``header``, verified with the provider's own keys, bound to the identity token."""

    header: str = "x-device-token"
    provider: Issuer  # the provider as an issuer: its keys, audiences, algorithms, lifetime
    max_age: Duration = timedelta(minutes=10)  # since the token's iat
    binding_claim: str = "device_id"  # the identity token's claim naming the device
    claims: DeviceClaimNames = Field(default_factory=_posture_defaults)
    country: str | None = None  # a signed location claim in the device token

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
        return _claim_path(value)

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


class ClientCertificateSettings(_Model):
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


class ClientIpSettings(_Model):
    """How the client address is found: Envoy's asserted peer, then X-Forwarded-For entries
    right to left through the trusted proxies (see app/evidence/client_ip.py)."""

    envoy_use_remote_address: bool = True  # as in Envoy: it appends its peer to X-Forwarded-For
    trusted_hops: int = Field(default=0, ge=0, le=16)
    trusted_proxies: list[Cidr] = Field(default_factory=list)


class GeoIpSettings(_Model):
    """A MaxMind-format country database (GeoLite2/GeoIP2 Country or City)."""

    path: Path
    reload_interval: Duration = timedelta(minutes=1)

    @field_validator("reload_interval")
    @classmethod
    def _interval(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(days=1):
            raise ValueError("must be between 1s and 1d")
        return value


class LocationSettings(_Model):
    # Use a signed location claim as the country when the IP address gives none.
    country_from_claims: bool = False


class EvidenceSettings(_Model):
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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ZTAUTHZ_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: Server = Server()
    issuers: list[Issuer] = Field(min_length=1)
    policies: Path = Path("policies")
    # A second policy directory evaluated beside the live one: differences are logged only.
    policies_candidate: Path | None = None
    grants: GrantSettings = GrantSettings()
    reload: ReloadSettings = ReloadSettings()
    token: Token = Token()
    response: Response = Response()
    telemetry: TelemetrySettings = TelemetrySettings()
    evidence: EvidenceSettings = EvidenceSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("issuers")
    @classmethod
    def _unique_issuers(cls, value: list[Issuer]) -> list[Issuer]:
        seen = [i.issuer for i in value]
        dupes = sorted({i for i in seen if seen.count(i) > 1})
        if dupes:
            raise ValueError(f"issuer listed more than once: {dupes}")
        return value

    @model_validator(mode="after")
    def _evidence_issuers(self) -> Settings:
        known = {issuer.issuer for issuer in self.issuers}
        unknown = [e.issuer for e in self.evidence.token_claims if e.issuer not in known]
        if unknown:
            raise ValueError(f"evidence.token_claims names issuer(s) not in issuers: {unknown}")
        device = self.evidence.device_token
        if device is not None and device.provider.issuer in known:
            # A device token must never pass as an identity token, nor the other way round.
            raise ValueError("evidence.device_token.provider must not also be an identity issuer")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file: the file is the base, ZTAUTHZ_* are per-deployment tweaks.
        return (env_settings, init_settings)


class ConfigError(Exception):
    """Invalid configuration: one line per problem, each naming the key (and file:line)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _key_name(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _env_source(loc: tuple[str | int, ...]) -> str | None:
    """The ZTAUTHZ_* variable that supplied ``loc`` (or one of its parents), if any."""
    names = [str(p).upper() for p in loc if isinstance(p, str)]
    for depth in range(len(names), 0, -1):
        var = "ZTAUTHZ_" + "__".join(names[:depth])
        if var in os.environ:
            return f"environment {var}"
    return None


def _describe(exc: ValidationError, located: Located) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
        key = _key_name(loc)
        where = _env_source(loc) or f"{located.file}:{located.line_of(loc)}"
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required key is missing"
        problems.append(f"{where}: {key}: {message}")
    return problems


def load_settings(path: Path) -> Settings:
    """Read and validate the configuration file (plus ZTAUTHZ_* overrides)."""
    try:
        located = load_single(path)
    except FileNotFoundError:
        raise ConfigError([f"{path}: configuration file not found"]) from None
    except YamlError as exc:
        raise ConfigError([str(exc)]) from None
    if not isinstance(located.data, dict):
        raise ConfigError([f"{path}:1: the configuration must be a mapping of keys"])
    data: dict[str, Any] = dict(located.data)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, located)) from None
    if not settings.policies.is_absolute():
        # Relative policy paths are relative to the configuration file, not the cwd.
        settings = settings.model_copy(update={"policies": path.parent / settings.policies})
    candidate = settings.policies_candidate
    if candidate is not None and not candidate.is_absolute():
        settings = settings.model_copy(update={"policies_candidate": path.parent / candidate})
    geoip = settings.evidence.geoip
    if geoip is not None and not geoip.path.is_absolute():
        located_geoip = geoip.model_copy(update={"path": path.parent / geoip.path})
        evidence = settings.evidence.model_copy(update={"geoip": located_geoip})
        settings = settings.model_copy(update={"evidence": evidence})
    return settings
