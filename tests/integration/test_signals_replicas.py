"""Three ztauthz replicas sharing one real redis-server, each behind its own Envoy: an event
received by one replica is enforced by all, within a measured bound; killing Redis loses no
revocation already applied, and the replicas report not ready after the configured grace.

The propagation test prints its measurement (``signals propagation: ...``) and asserts the
bound the documentation states (docs/continuous-access-evaluation.md: 1 second).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from app.dev.procs import ProcessGroup
from app.dev.transmitter import device_compliance_change, session_revoked, subject
from tests.integration.redis_support import RedisServer, start_redis
from tests.integration.signals_support import (
    CLIENT,
    RECEIVER_AUDIENCE,
    Fleet,
    Replica,
    start_fleet,
    wait_for,
)

pytestmark = pytest.mark.integration

STATED_BOUND = 1.0  # seconds: what docs/continuous-access-evaluation.md promises
ROUNDS = 30


@pytest.fixture(scope="module")
def redis_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
    child_env: dict[str, str],
    redis_shared: RedisServer,
) -> Iterator[Fleet]:
    store = {
        "backend": "redis",
        "redis": {"url": redis_shared.url, "password_file": str(redis_shared.password_file)},
    }
    with ProcessGroup() as group:
        yield start_fleet(
            group, tmp_path_factory.mktemp("replicas"), child_env, replicas=3, store=store
        )


def push(fleet: Fleet, replica: Replica, set_token: str) -> httpx.Response:
    return CLIENT.post(
        replica.push_url,
        content=set_token.encode(),
        headers={
            "content-type": "application/secevent+jwt",
            "authorization": f"Bearer {fleet.push_token}",
        },
    )


def revoke_user(fleet: Fleet, replica: Replica, user: str) -> httpx.Response:
    return push(
        fleet,
        replica,
        session_revoked(
            fleet.keys,
            issuer=fleet.issuer_url,
            audience=RECEIVER_AUDIENCE,
            sub_id=subject(fleet.issuer_url, sub=user),
        ),
    )


def refused(replica: Replica, token: str, status: int = 401) -> bool:
    return replica.get("/invoices", token).status_code == status


def allowed(replica: Replica, token: str) -> bool:
    return replica.get("/invoices", token).status_code == 200


def ready_is(replica: Replica, status: int) -> bool:
    return replica.readyz().status_code == status


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_an_event_pushed_to_one_replica_is_enforced_by_all(fleet: Fleet) -> None:
    first, *others = fleet.replicas
    delays: list[float] = []
    for _ in range(ROUNDS):
        user = f"user-{uuid.uuid4().hex[:10]}"
        token = fleet.token(user)
        for replica in fleet.replicas:
            assert replica.get("/invoices", token).status_code == 200
        answer = revoke_user(fleet, first, user)
        pushed = time.perf_counter()
        assert answer.status_code == 202, answer.text
        assert refused(first, token), "the receiving replica refuses the next request"
        pending = list(others)
        while pending:
            for replica in list(pending):
                if refused(replica, token):
                    delays.append(time.perf_counter() - pushed)
                    pending.remove(replica)
            assert time.perf_counter() - pushed < 10, fleet.logs()
    p50, p99 = percentile(delays, 0.5), percentile(delays, 0.99)
    summary = (
        f"signals propagation: {len(delays)} samples over {ROUNDS} events, 2 replicas each: "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(delays) * 1000:.1f} ms, "
        f"mean {statistics.fmean(delays) * 1000:.1f} ms"
    )
    print(summary)
    (Path(fleet.workdir) / "propagation.txt").write_text(summary + "\n", encoding="utf-8")
    assert p99 < STATED_BOUND, summary
    # each replica measured what it heard: the propagation histogram is fed
    metrics = httpx.get(others[0].admin_url + "/metrics", timeout=5).text
    assert "ztauthz_signals_propagation_seconds_count" in metrics


def test_device_compliance_reaches_every_replica(fleet: Fleet) -> None:
    device = f"laptop-{uuid.uuid4().hex[:8]}"
    token = fleet.token(f"user-{uuid.uuid4().hex[:8]}", device_id=device)
    for replica in fleet.replicas:
        assert replica.get("/invoices", token).status_code == 200
    now = time.time()
    change = device_compliance_change(
        fleet.keys,
        issuer=fleet.issuer_url,
        audience=RECEIVER_AUDIENCE,
        device=device,
        compliant=False,
        now=now,
    )
    assert push(fleet, fleet.replicas[1], change).status_code == 202
    for replica in fleet.replicas:
        assert wait_for(partial(refused, replica, token, 403), STATED_BOUND) is not None
        assert replica.get("/invoices", token).json()["reason"] == "device_noncompliant"
    back = device_compliance_change(
        fleet.keys,
        issuer=fleet.issuer_url,
        audience=RECEIVER_AUDIENCE,
        device=device,
        compliant=True,
        now=now + 1,
    )
    assert push(fleet, fleet.replicas[2], back).status_code == 202
    for replica in fleet.replicas:
        ok = wait_for(partial(allowed, replica, token), STATED_BOUND)
        assert ok is not None


def test_killing_redis_loses_no_applied_revocation(fleet: Fleet, redis_shared: RedisServer) -> None:
    applied_user = f"user-{uuid.uuid4().hex[:10]}"
    applied_token = fleet.token(applied_user)
    assert revoke_user(fleet, fleet.replicas[0], applied_user).status_code == 202
    for replica in fleet.replicas:
        assert wait_for(partial(refused, replica, applied_token), STATED_BOUND) is not None
    redis_shared.kill()
    try:
        # Every replica goes on refusing what it knew.
        for _ in range(3):
            for replica in fleet.replicas:
                assert refused(replica, applied_token)
        # A revocation received during the outage: enforced where it arrived, answered 503
        # so that the transmitter delivers it again.
        late_user = f"user-{uuid.uuid4().hex[:10]}"
        late_token = fleet.token(late_user)
        late = session_revoked(
            fleet.keys,
            issuer=fleet.issuer_url,
            audience=RECEIVER_AUDIENCE,
            sub_id=subject(fleet.issuer_url, sub=late_user),
        )
        answer = push(fleet, fleet.replicas[2], late)
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"]
        assert refused(fleet.replicas[2], late_token)
        # After the grace (3 s in this configuration), every replica reports not ready.
        for replica in fleet.replicas:
            assert wait_for(partial(ready_is, replica, 503), 15, 0.2) is not None
            status = replica.readyz().json()["signals"]
            assert status["store_up"] is False and status["ready"] is False
            assert refused(replica, applied_token)
        log = Path(fleet.processes["ztauthz-1"].log_path).read_text(encoding="utf-8")
        assert (
            '"event": "signals_store_unreachable"' in log
            or '"event":"signals_store_unreachable"' in log
        )
    finally:
        redis_shared.restart()
    # Redis is back (empty: a fresh server): ready again, the pending record written, and the
    # replicas that missed it learn it; the transmitter's redelivery is accepted.
    for replica in fleet.replicas:
        assert wait_for(partial(ready_is, replica, 200), 20, 0.2) is not None
    for replica in fleet.replicas:
        assert wait_for(partial(refused, replica, late_token), 15, 0.05) is not None
        assert refused(replica, applied_token)
    assert push(fleet, fleet.replicas[0], late).status_code == 202
