"""What every settings section shares: the strict frozen model, URL and claim-path checks."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo


class Model(BaseModel):
    """A settings section: unknown keys are errors, values never change after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


# Asymmetric algorithms only: keys come from a public JWKS, so HMAC ("HS*") would let anyone
# holding the public key forge tokens, and "none" is no signature at all.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def _https_url(value: str, info: ValidationInfo) -> str:
    return check_url(value, info.field_name or "url")


# A URL field checked by check_url, its errors naming the field.
HttpsUrl = Annotated[str, AfterValidator(_https_url)]


def jwks_uri_pins_keys(data: Any, metadata: str) -> Any:
    """A model validator's step (mode "before"): a configured ``jwks_uri`` turns the metadata
    lookup named ``metadata`` (``discovery``, ``configuration``) off; asking for both is an error."""
    if isinstance(data, dict) and data.get("jwks_uri") is not None:
        if data.get(metadata) is True:
            raise ValueError(f"give either {metadata}: true or jwks_uri, not both")
        data = {**data, metadata: False}
    return data


def supported_algorithms(value: list[str]) -> list[str]:
    """``value`` if every algorithm is one of SUPPORTED_ALGORITHMS; ValueError otherwise."""
    bad = [alg for alg in value if alg not in SUPPORTED_ALGORITHMS]
    if bad:
        raise ValueError(
            f"unsupported algorithm(s) {bad}; allowed: {sorted(SUPPORTED_ALGORITHMS)} "
            "(never 'none', never HMAC with keys from a JWKS)"
        )
    return value


def cidr(value: Any) -> Any:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a CIDR such as 10.0.0.0/8 or 2001:db8::/32")
    try:
        return ipaddress.ip_network(value.strip())
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR ({exc})") from None


Cidr = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(cidr)]


def claim_path(value: str | None) -> str | None:
    if value is not None and (value == "" or "" in value.split(".")):
        raise ValueError("expected a claim name or a dotted path without empty parts")
    return value


# Token or SET signing algorithms, every one of SUPPORTED_ALGORITHMS.
Algorithms = Annotated[list[str], AfterValidator(supported_algorithms)]
