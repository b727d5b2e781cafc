"""The store section: memory by default, Redis with its password outside the configuration,
every mistake named by key, file and line."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.unit.settings.config_files import ONE_ISSUER, load, problems


def test_the_default_store_is_memory(tmp_path: Path) -> None:
    settings = load(tmp_path, ONE_ISSUER)
    assert settings.store.backend == "memory"
    assert settings.store.memory.max_entries == 200_000
    assert settings.store.redis is None


def test_redis_settings_with_a_relative_password_file(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        ONE_ISSUER
        + """\
store:
  backend: redis
  redis:
    url: rediss://redis.internal:6380/2
    password_file: secrets/redis-password
    ca_file: ca.pem
    key_prefix: "prod:ztauthz:"
    timeout: 100ms
""",
    )
    redis = settings.store.redis
    assert redis is not None
    assert redis.password_file == tmp_path / "secrets/redis-password"
    assert redis.ca_file == tmp_path / "ca.pem"
    assert redis.timeout == timedelta(milliseconds=100)
    assert redis.key_prefix == "prod:ztauthz:"


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ("store: {backend: redis}", "store: backend redis needs store.redis"),
        ("store: {backend: etcd}", "store.backend: Input should be 'memory' or 'redis'"),
        (
            "store: {backend: redis, redis: {url: 'redis://:hunter2@db:6379/0'}}",
            "store.redis.url: put the password in password_file or password_env",
        ),
        ("store: {redis: {url: 'http://db:6379'}}", "store.redis.url: expected a redis://"),
        ("store: {redis: {url: 'redis://db/0?ssl=true'}}", "store.redis.url: options in the URL"),
        ("store: {redis: {url: 'redis:///0'}}", "store.redis.url: the URL names no host"),
        ("store: {redis: {url: 'redis://db', timeout: 30s}}", "store.redis.timeout: must be"),
        ("store: {redis: {url: 'redis://db', key_prefix: 'a b'}}", "store.redis.key_prefix"),
        (
            "store: {redis: {url: 'redis://db', password_env: P, password_file: p}}",
            "give password_file or password_env, not both",
        ),
        ("store: {redis: {url: 'redis://db', ca_file: ca.pem}}", "ca_file needs a rediss://"),
        ("store: {memory: {max_entries: 5}}", "store.memory.max_entries"),
        ("store: {health_interval: 1h}", "health_interval must be between"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, store: str, expected: str) -> None:
    found = problems(tmp_path, ONE_ISSUER + store + "\n")
    assert any(expected in line and "ztauthz.yaml:" in line for line in found), found


def test_the_password_never_appears_in_an_error(tmp_path: Path) -> None:
    found = problems(tmp_path, ONE_ISSUER + "store: {redis: {url: 'redis://:hunter2@db:6379/0'}}\n")
    assert not any("hunter2" in line for line in found)
