"""Configuration: one YAML file, every key overridable by a ZTAUTHZ_* environment variable.

Nested keys use ``__`` in environment names (``ZTAUTHZ_SERVER__CHECK__PORT=9001``); lists are
given as JSON (``ZTAUTHZ_ISSUERS='[{"issuer": ...}]'``). Validation happens once, at start:
an invalid configuration never serves.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
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


class Response(_Model):
    """What denials tell the client. Reason codes are always given; rule ids only on request."""

    include_rule: bool = False
    realm: str = "ztauthz"


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
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("issuers")
    @classmethod
    def _unique_issuers(cls, value: list[Issuer]) -> list[Issuer]:
        seen = [i.issuer for i in value]
        dupes = sorted({i for i in seen if seen.count(i) > 1})
        if dupes:
            raise ValueError(f"issuer listed more than once: {dupes}")
        return value

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
    return settings
