"""Reading the configuration file: validation once, at start, with every problem located.

An invalid configuration never serves: each problem is one line naming the key and the file and
line it came from (or the ZTAUTHZ_* variable that supplied it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.settings.issuers import Issuer
from app.settings.model import Settings
from app.yamlsrc import Located, PathKey, YamlError, key_path, load_single


class ConfigError(Exception):
    """Invalid configuration: one line per problem, each naming the key (and file:line)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _env_source(loc: PathKey) -> str | None:
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
        key = key_path(loc) or "(top level)"
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
    keys = settings.assertion.keys
    if keys is not None and not keys.is_absolute():
        assertion = settings.assertion.model_copy(update={"keys": path.parent / keys})
        settings = settings.model_copy(update={"assertion": assertion})
    nonce = settings.dpop.nonce
    if nonce is not None and not nonce.secret_file.is_absolute():
        located_nonce = nonce.model_copy(update={"secret_file": path.parent / nonce.secret_file})
        dpop = settings.dpop.model_copy(update={"nonce": located_nonce})
        settings = settings.model_copy(update={"dpop": dpop})
    redis = settings.store.redis
    if redis is not None:
        # Files named by the store section are relative to the configuration file, too.
        located_redis = redis.model_copy(
            update={
                name: path.parent / value
                for name in ("password_file", "ca_file")
                if (value := getattr(redis, name)) is not None and not value.is_absolute()
            }
        )
        store = settings.store.model_copy(update={"redis": located_redis})
        settings = settings.model_copy(update={"store": store})
    if any(issuer.introspection is not None for issuer in settings.issuers):
        issuers = [_located_secrets(issuer, path.parent) for issuer in settings.issuers]
        settings = settings.model_copy(update={"issuers": issuers})
    return settings


def _located_secrets(issuer: Issuer, base: Path) -> Issuer:
    """Relative secret and key files of ``issuer.introspection`` are relative to ``base``."""
    introspection = issuer.introspection
    if introspection is None:
        return issuer
    update = {
        name: base / value
        for name in ("client_secret_file", "private_key_file")
        if (value := getattr(introspection, name)) is not None and not value.is_absolute()
    }
    if not update:
        return issuer
    return issuer.model_copy(update={"introspection": introspection.model_copy(update=update)})
