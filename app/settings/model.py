"""The whole configuration: one ``Settings`` of every section, with ZTAUTHZ_* overrides.

Nested keys use ``__`` in environment names (``ZTAUTHZ_SERVER__CHECK__PORT=9001``); lists are
given as JSON (``ZTAUTHZ_ISSUERS='[{"issuer": ...}]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from app.settings.assertion import AssertionSettings
from app.settings.dpop import DpopSettings
from app.settings.evidence import EvidenceSettings
from app.settings.issuers import Issuer, Token
from app.settings.policy import GrantSettings, ReloadSettings
from app.settings.response import Response
from app.settings.server import Server
from app.settings.signals import SignalsSettings
from app.settings.store import StoreSettings
from app.settings.telemetry import TelemetrySettings


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
    assertion: AssertionSettings = AssertionSettings()  # the signed identity assertion
    signals: SignalsSettings = SignalsSettings()
    store: StoreSettings = StoreSettings()
    dpop: DpopSettings = DpopSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("issuers")
    @classmethod
    def _unique_issuers(cls, value: list[Issuer]) -> list[Issuer]:
        seen = [i.issuer for i in value]
        dupes = sorted({i for i in seen if seen.count(i) > 1})
        if dupes:
            raise ValueError(f"issuer listed more than once: {dupes}")
        opaque = [i.issuer for i in value if i.introspection and i.introspection.opaque_tokens]
        if len(opaque) > 1:
            # An opaque token names no issuer: it would have to be shown to several
            # authorization servers, handing a bearer token to one that never issued it.
            raise ValueError(
                f"introspection.opaque_tokens is enabled for {len(opaque)} issuers {opaque}; "
                "at most one issuer may accept opaque tokens"
            )
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
        for transmitter in self.signals.transmitters:
            named = transmitter.issuers or (
                [transmitter.issuer] if transmitter.issuer in known else []
            )
            if not named and transmitter.events != ["device-compliance-change"]:
                raise ValueError(
                    f"signals.transmitters[{transmitter.name}].issuers: name the token issuers "
                    "whose users and sessions its events may affect"
                )
            strange = sorted(set(named) - known)
            if strange:
                raise ValueError(
                    f"signals.transmitters[{transmitter.name}].issuers names issuer(s) not in "
                    f"issuers: {strange}"
                )
        server, receiver = self.server, self.signals.receiver
        if self.signals.own_listener:
            taken = {(server.admin.host, server.admin.port)}
            if server.check.enabled:
                taken.add((server.check.host, server.check.port))
            if server.grpc.enabled:
                taken.add((server.grpc.host, server.grpc.port))
            if receiver.port and (receiver.host, receiver.port) in taken:
                raise ValueError("signals.receiver uses the address of another listener")
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
