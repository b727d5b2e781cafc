"""How a subject appears in decision logs and spans: as is, or as a keyed hash of it.

With a key, the subject is replaced by the first 32 hex digits of HMAC-SHA256(key, subject):
stable (the same user gives the same value, so logs can still be grouped and joined) but not
reversible, and not linkable across deployments with different keys. The key is read from the
environment variable or file the configuration names, never from the configuration itself,
and it is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from functools import lru_cache

from app.settings import ConfigError, TelemetrySettings

SubjectView = Callable[[str], str]
_MIN_KEY_BYTES = 16
_CACHE = 4096


def _unchanged(subject: str) -> str:
    return subject


def subject_view(key: bytes | None) -> SubjectView:
    """The function that turns a subject into what is recorded (cached: subjects repeat)."""
    if key is None:
        return _unchanged

    @lru_cache(maxsize=_CACHE)
    def hashed(subject: str) -> str:
        # surrogatepass: a subject is verified I-JSON text, but this must hold for any str
        data = subject.encode("utf-8", "surrogatepass")
        return hmac.new(key, data, hashlib.sha256).hexdigest()[:32]

    return hashed


def load_subject_key(
    settings: TelemetrySettings, environ: Mapping[str, str] | None = None
) -> bytes | None:
    """The hashing key named by ``settings``, or None when subjects are recorded as is.

    Raises ConfigError when a key is named but missing or too short: recording raw subjects
    when the operator asked for pseudonyms would be the unsafe fallback.
    """
    env = os.environ if environ is None else environ
    if settings.subject_hash_key_env is not None:
        name = settings.subject_hash_key_env
        value = env.get(name, "").strip().encode("utf-8")
        where = f"environment variable {name}"
    elif settings.subject_hash_key_file is not None:
        path = settings.subject_hash_key_file
        try:
            value = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(
                [f"telemetry.subject_hash_key_file: cannot read {path}: {exc.strerror}"]
            ) from None
        where = f"file {path}"
    else:
        return None
    if len(value) < _MIN_KEY_BYTES:
        raise ConfigError(
            [f"telemetry: the subject hash key ({where}) must hold at least {_MIN_KEY_BYTES} bytes"]
        )
    return value
