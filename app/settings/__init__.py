"""Configuration: one YAML file, every key overridable by a ZTAUTHZ_* environment variable.

One module per section (``server``, ``issuers``, ``response``, ``telemetry``, ``policy``,
``evidence``, ``assertion``, ``store``, ``dpop``), the whole in ``model``, reading and validating the file in ``load``. Validation
happens once, at start: an invalid configuration never serves. The names below are the
package's public surface.
"""

from app.settings.assertion import ASSERTION_HEADER, AssertionRoute, AssertionSettings
from app.settings.base import SUPPORTED_ALGORITHMS, Model, check_url
from app.settings.dpop import DpopNonceSettings, DpopSettings
from app.settings.evidence import (
    ClientCertificateSettings,
    ClientIpSettings,
    DeviceClaimNames,
    DeviceTokenSettings,
    EvidenceSettings,
    GeoIpSettings,
    IdentityDeviceClaims,
    LocationSettings,
    TokenClaimEvidence,
)
from app.settings.issuers import ClaimNames, Issuer, Jwks, Token
from app.settings.load import ConfigError, load_settings
from app.settings.model import Settings
from app.settings.policy import GrantSettings, ReloadSettings
from app.settings.response import Response
from app.settings.server import AdminListener, CheckListener, GrpcListener, Listener, Server
from app.settings.store import MemoryStoreSettings, RedisStoreSettings, StoreSettings
from app.settings.telemetry import DecisionLogSettings, TelemetrySettings

__all__ = [
    "ASSERTION_HEADER",
    "SUPPORTED_ALGORITHMS",
    "AdminListener",
    "AssertionRoute",
    "AssertionSettings",
    "CheckListener",
    "ClaimNames",
    "ClientCertificateSettings",
    "ClientIpSettings",
    "ConfigError",
    "DecisionLogSettings",
    "DeviceClaimNames",
    "DeviceTokenSettings",
    "DpopNonceSettings",
    "DpopSettings",
    "EvidenceSettings",
    "GeoIpSettings",
    "GrantSettings",
    "GrpcListener",
    "IdentityDeviceClaims",
    "Issuer",
    "Jwks",
    "Listener",
    "LocationSettings",
    "MemoryStoreSettings",
    "Model",
    "RedisStoreSettings",
    "ReloadSettings",
    "Response",
    "Server",
    "Settings",
    "StoreSettings",
    "TelemetrySettings",
    "Token",
    "TokenClaimEvidence",
    "check_url",
    "load_settings",
]
