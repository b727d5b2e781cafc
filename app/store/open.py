"""Build the configured store (``store`` in the configuration): memory or Redis.

The Redis password is read here, once, from the file or environment variable the settings
name, and handed to the client only: it is never logged, never part of an error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from app.settings import ConfigError
from app.settings.store import RedisStoreSettings, StoreSettings
from app.store import SharedStore
from app.store.memory import MemoryStore


def open_store(settings: StoreSettings, environ: Mapping[str, str] | None = None) -> SharedStore:
    """The store ``settings`` describe; raises ConfigError when its password cannot be read.
    Nothing connects yet: the first operation (or ``ping``) does."""
    if settings.backend == "memory":
        return MemoryStore(max_entries=settings.memory.max_entries)
    assert settings.redis is not None  # the settings' validator requires it
    # Imported only when configured: a single replica never loads the Redis client.
    from app.store.redis import RedisStore

    password = redis_password(settings.redis, os.environ if environ is None else environ)
    return RedisStore.from_settings(settings.redis, password)


def redis_password(settings: RedisStoreSettings, environ: Mapping[str, str]) -> str | None:
    if settings.password_env is not None:
        value = environ.get(settings.password_env, "")
        if not value:
            raise ConfigError(
                [
                    f"store.redis.password_env: environment variable {settings.password_env} is empty or unset"
                ]
            )
        return value
    if settings.password_file is not None:
        try:
            value = settings.password_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(
                [f"store.redis.password_file: cannot read {settings.password_file}: {reason}"]
            ) from None
        if not value:
            raise ConfigError([f"store.redis.password_file: {settings.password_file} is empty"])
        return value
    return None
