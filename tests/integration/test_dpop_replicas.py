"""Two ztauthz replicas sharing one Redis (store.backend: redis) and one DPoP nonce secret, each
asked directly as Envoy's HTTP ext_authz would: a proof accepted by one replica is a replay
for the other; a nonce one replica hands out is accepted by the other (no shared state); with
Redis killed, DPoP-bound requests are refused (503 store_unavailable, fail closed) while plain
bearer tokens still pass, /readyz and the metrics report the store down, and both recover when
Redis is back."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from app.dev.dpop import DpopKey
from app.dev.ports import free_port
from app.dev.procs import HttpReady, ManagedProcess, ProcessGroup
from app.dev.stack import Reply, Stack, http_request, ztauthz_command
from app.dev.tokens import mint
from app.reasons import Reason
from tests.integration.redis_support import RedisServer, start_redis

pytestmark = pytest.mark.integration

POLICIES = Path(__file__).resolve().parent / "policies"
HOST = "api.example.com"
URL = f"https://{HOST}/invoices/42"


@dataclass
class Replicas:
    checks: tuple[int, int]
    admins: tuple[int, int]
    redis: RedisServer
    stack: Stack
    logs: tuple[Path, Path]

    def token(self, key: DpopKey | None = None) -> str:
        extra = {} if key is None else {"cnf": {"jkt": key.jkt}}
        return mint(
            self.stack.keys,
            issuer=self.stack.issuer_url,
            audience=self.stack.audience,
            subject="alice",
            groups=["finance"],
            scopes=["invoices:read"],
            extra_claims=extra,
        )

    def check(self, replica: int, headers: dict[str, str]) -> Reply:
        sent = {"Host": HOST, "X-Forwarded-Proto": "https", **headers}
        return http_request(self.checks[replica], "GET", "/check/invoices/42", sent)

    def admin(self, replica: int, path: str) -> Reply:
        return http_request(self.admins[replica], "GET", path)


@pytest.fixture(scope="module")
def replicas(
    http_stack: Stack, tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str]
) -> Iterator[Replicas]:
    work = tmp_path_factory.mktemp("replicas")
    redis = start_redis(work / "redis")
    secret = work / "dpop-nonce-secret"
    secret.write_text(secrets.token_urlsafe(48), encoding="utf-8")
    checks, admins, processes, logs = [], [], [], []
    for n in (0, 1):
        check, admin = free_port(), free_port()
        config = {
            "server": {"check": {"port": check}, "admin": {"port": admin}},
            "issuers": [
                {
                    "issuer": http_stack.issuer_url,
                    "audiences": [http_stack.audience],
                    "algorithms": ["RS256", "ES256"],
                }
            ],
            "policies": str(POLICIES),
            "store": {
                "backend": "redis",
                "health_interval": "200ms",
                "unready_after": "1s",
                "redis": {
                    "url": redis.url,
                    "password_file": str(redis.password_file),
                    "key_prefix": "replicas-test:",
                },
            },
            "dpop": {"nonce": {"secret_file": str(secret)}},
        }
        path = work / f"ztauthz-{n}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        log = work / f"ztauthz-{n}.log"
        processes.append(
            ManagedProcess(
                f"ztauthz-{n}",
                [*ztauthz_command(), "serve", "--config", str(path)],
                log_path=log,
                ready=HttpReady(f"http://127.0.0.1:{admin}/readyz"),
                env=child_env,
            )
        )
        checks.append(check)
        admins.append(admin)
        logs.append(log)
    try:
        with ProcessGroup() as group:
            group.start(*processes)
            yield Replicas(
                (checks[0], checks[1]),
                (admins[0], admins[1]),
                redis,
                http_stack,
                (logs[0], logs[1]),
            )
    finally:
        redis.process.stop()


def nonce_from(replicas: Replicas, replica: int, key: DpopKey, token: str) -> str:
    """The nonce a replica hands out with its use_dpop_nonce challenge (RFC 9449 §9)."""
    reply = replicas.check(
        replica,
        {"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", URL, access_token=token)},
    )
    assert reply.status == 401
    assert reply.json()["reason"] == Reason.DPOP_NONCE_REQUIRED.value
    assert 'error="use_dpop_nonce"' in reply.headers["www-authenticate"]
    return reply.headers["dpop-nonce"]


def test_a_nonce_from_one_replica_is_accepted_by_the_other(replicas: Replicas) -> None:
    key = DpopKey.generate("ES256")
    token = replicas.token(key)
    nonce = nonce_from(replicas, 0, key, token)
    proof = key.proof("GET", URL, access_token=token, nonce=nonce)
    reply = replicas.check(1, {"Authorization": f"DPoP {token}", "DPoP": proof})
    assert reply.status == 200, reply.body


def test_a_proof_used_at_one_replica_is_a_replay_at_the_other(replicas: Replicas) -> None:
    key = DpopKey.generate("EdDSA")
    token = replicas.token(key)
    nonce = nonce_from(replicas, 1, key, token)
    headers = {
        "Authorization": f"DPoP {token}",
        "DPoP": key.proof("GET", URL, access_token=token, nonce=nonce),
    }
    assert replicas.check(0, headers).status == 200
    replayed = replicas.check(1, headers)
    assert replayed.status == 401
    assert replayed.json()["reason"] == Reason.DPOP_PROOF_REPLAYED.value
    assert replicas.check(0, headers).json()["reason"] == Reason.DPOP_PROOF_REPLAYED.value


def _wait(condition: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_redis_killed_refuses_proofs_fails_readiness_and_recovers(replicas: Replicas) -> None:
    key = DpopKey.generate("ES256")
    token = replicas.token(key)
    nonce = nonce_from(replicas, 0, key, token)

    def bound(replica: int) -> Reply:
        proof = key.proof("GET", URL, access_token=token, nonce=nonce)
        return replicas.check(replica, {"Authorization": f"DPoP {token}", "DPoP": proof})

    assert bound(0).status == 200
    replicas.redis.kill()
    try:
        for replica in (0, 1):
            refused = bound(replica)
            assert refused.status == 503, refused.body
            assert refused.json()["reason"] == Reason.STORE_UNAVAILABLE.value
            # A plain bearer token needs no store: still decided.
            plain = replicas.check(replica, {"Authorization": f"Bearer {replicas.token()}"})
            assert plain.status == 200
        _wait(lambda: replicas.admin(0, "/readyz").status == 503, "readiness to fail")
        ready = replicas.admin(0, "/readyz").json()
        assert ready["store"]["backend"] == "redis" and ready["store"]["up"] is False
        metrics = replicas.admin(1, "/metrics").body.decode()
        assert 'ztauthz_store_up{backend="redis"} 0.0' in metrics
        assert 'ztauthz_store_failures_total{operation="dpop_replay"}' in metrics
    finally:
        replicas.redis.restart()
    _wait(lambda: replicas.admin(0, "/readyz").status == 200, "readiness to come back")
    _wait(lambda: replicas.admin(1, "/readyz").status == 200, "readiness to come back")
    assert bound(1).status == 200
    events = [
        json.loads(line).get("event")
        for line in replicas.logs[0].read_text(encoding="utf-8").splitlines()
        if line.startswith("{")
    ]
    assert "store_unavailable" in events and "store_recovered" in events
    assert replicas.redis.password_file.read_text().strip() not in replicas.logs[0].read_text()
