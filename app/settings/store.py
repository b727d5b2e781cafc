"""The shared store: where the DPoP replay cache and the revocation state live.

``memory`` (the default) keeps them in this process: right for one replica. Several replicas
share one Redis (``redis``), so that a proof replayed to another replica, or a revocation one
replica received, is known to all. The Redis password is never part of this configuration:
it is read from the file or environment variable named here (so it never appears in a
configuration dump or a log line), and a URL that embeds one is refused.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from app.durations import Duration
from app.settings.base import Model

_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/")


class MemoryStoreSettings(Model):
    """The embedded store: one process, bounded, entries dropped when their time is up."""

    # Live records at most (replay-cache entries and revocations together), about 200 bytes
    # each. A full store refuses new claims rather than forget live ones: a forgotten proof id
    # could be replayed, a forgotten revocation would let a revoked token in again.
    max_entries: int = Field(default=200_000, ge=100, le=10_000_000)


class RedisStoreSettings(Model):
    """One Redis (or a Redis-protocol server) shared by every replica."""

    # redis://host:6379/0, rediss://host:6380/0 (TLS) or unix:///run/redis.sock. A user name
    # may be given in the URL; the password never (password_file / password_env).
    url: str
    password_file: Path | None = None
    password_env: str | None = Field(default=None, min_length=1)
    # Prepended to every key and channel, so that deployments can share one Redis.
    key_prefix: str = Field(default="ztauthz:", min_length=1, max_length=64)
    # Each command (and each connection attempt) gives up after this long: the check it serves
    # is then refused (fail closed) rather than left waiting.
    timeout: Duration = timedelta(milliseconds=250)
    connect_timeout: Duration = timedelta(milliseconds=500)
    max_connections: int = Field(default=64, ge=1, le=4096)
    # TLS (rediss://): a CA bundle to verify the server with instead of the system's.
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("the URL names no host")
        if parts.password is not None:
            # The URL is configuration and may be printed; a password in it would leak.
            raise ValueError("put the password in password_file or password_env, not in the URL")
        if parts.query or parts.fragment:
            raise ValueError("options in the URL are not read; use the keys of store.redis")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not set(value) <= _PREFIX_CHARS:
            raise ValueError("use letters, digits and - _ . : / only")
        return value

    @field_validator("timeout", "connect_timeout")
    @classmethod
    def _short(cls, value: timedelta) -> timedelta:
        if not timedelta(milliseconds=10) <= value <= timedelta(seconds=5):
            # Every check that needs the store waits this long at most when Redis is away.
            raise ValueError("must be between 10ms and 5s")
        return value

    @model_validator(mode="after")
    def _one_password_source(self) -> RedisStoreSettings:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give password_file or password_env, not both")
        if self.ca_file is not None and not self.url.startswith("rediss://"):
            raise ValueError("ca_file needs a rediss:// (TLS) URL")
        return self


class StoreSettings(Model):
    backend: Literal["memory", "redis"] = "memory"
    memory: MemoryStoreSettings = MemoryStoreSettings()
    redis: RedisStoreSettings | None = None
    # How often the store is asked whether it answers (between the operations that tell).
    health_interval: Duration = timedelta(seconds=2)
    # Readiness fails once the store has not answered for this long (/readyz reports the store
    # at once either way). Requests that need it are refused from the first failure.
    unready_after: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _backend_configured(self) -> StoreSettings:
        if self.backend == "redis" and self.redis is None:
            raise ValueError("backend redis needs store.redis (at least its url)")
        if not timedelta(milliseconds=100) <= self.health_interval <= timedelta(minutes=1):
            raise ValueError("health_interval must be between 100ms and 1m")
        return self
