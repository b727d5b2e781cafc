"""The load scenarios and how one is measured: a warm-up, then one bounded wrk run per
concurrency level, every request checked to have been answered 200.

    1   bare       a bare uvicorn endpoint answering 200 (the ceiling of the server stack)
    2   warm       ztauthz's check endpoint, directly, the same token every request
    2i  warm-no-allow-lines  the same with allow lines sampled out of the decision log: what
                   the log costs (informational; no target uses it)
    3   cold-rs    ztauthz's check endpoint, directly, a different RS256 token every request
    3   cold-es    the same with ES256 tokens
    4   envoy      Envoy to the upstream, no authorization
    5   native     Envoy with jwt_authn + rbac (the in-proxy floor)
    6   ext-http   Envoy with ztauthz over HTTP ext_authz
    6b  ext-grpc   Envoy with ztauthz over gRPC ext_authz

Every scenario sends the same request (``GET /invoices/42`` with a bearer token) through the
same wrk script; the Envoy scenarios all forward to the bare endpoint as their upstream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.dev.stack import http_request
from bench import policies, wrk
from bench.loadstack import LoadStack
from bench.tokens import TokenPool

CHECK_PREFIX = "/check"
WARMUP_SECONDS = 2
WARMUP_CONNECTIONS = 8


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    number: str
    title: str
    port: Callable[[LoadStack], int]
    path: str
    cold_alg: str | None = None  # a different token of this algorithm on every request


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("bare", "1", "bare uvicorn endpoint", lambda s: s.bare_port, policies.PATH),
    Scenario(
        "warm",
        "2",
        "ztauthz direct, warm token cache",
        lambda s: s.http.check_port,
        CHECK_PREFIX + policies.PATH,
    ),
    Scenario(
        "warm-no-allow-lines",
        "2i",
        "the same, allow lines sampled out of the decision log (informational)",
        lambda s: s.http_no_allow_lines.check_port,
        CHECK_PREFIX + policies.PATH,
    ),
    Scenario(
        "cold-rs256",
        "3",
        "ztauthz direct, cold: new RS256 token each request",
        lambda s: s.http.check_port,
        CHECK_PREFIX + policies.PATH,
        cold_alg="RS256",
    ),
    Scenario(
        "cold-es256",
        "3",
        "ztauthz direct, cold: new ES256 token each request",
        lambda s: s.http.check_port,
        CHECK_PREFIX + policies.PATH,
        cold_alg="ES256",
    ),
    Scenario(
        "envoy", "4", "Envoy to upstream, no authz", lambda s: s.envoy_ports["none"], policies.PATH
    ),
    Scenario(
        "native",
        "5",
        "Envoy jwt_authn + rbac (in-proxy)",
        lambda s: s.envoy_ports["native"],
        policies.PATH,
    ),
    Scenario(
        "ext-http",
        "6",
        "Envoy + ztauthz, HTTP ext_authz",
        lambda s: s.envoy_ports["http"],
        policies.PATH,
    ),
    Scenario(
        "ext-grpc",
        "6b",
        "Envoy + ztauthz, gRPC ext_authz",
        lambda s: s.envoy_ports["grpc"],
        policies.PATH,
    ),
)


class ScenarioError(RuntimeError):
    """A scenario did not answer as the benchmark expects (every request must be a 200)."""


@dataclass(slots=True)
class Measured:
    scenario: Scenario
    runs: list[wrk.RunResult] = field(default_factory=list)

    def at(self, connections: int) -> wrk.RunResult:
        for run in self.runs:
            if run.connections == connections:
                return run
        raise KeyError(f"{self.scenario.key}: no run at {connections} connections")


def check_answers(stack: LoadStack, scenario: Scenario, token: str) -> None:
    """One request by hand: the scenario must allow the benchmark request (200)."""
    reply = http_request(
        scenario.port(stack), "GET", scenario.path, {"Authorization": f"Bearer {token}"}
    )
    if reply.status != 200:
        raise ScenarioError(
            f"{scenario.key}: expected 200 for the benchmark request, got {reply.status} "
            f"{reply.body[:200]!r}"
        )


def measure(
    stack: LoadStack,
    scenario: Scenario,
    *,
    connections: tuple[int, ...],
    seconds: int,
    warm_tokens: Path,
    pools: dict[str, TokenPool],
    log: Callable[[str], None],
) -> Measured:
    """Warm up, then one run per concurrency level. Cold scenarios take fresh tokens from
    their pool for every run (the pool grows before a run, never during one)."""
    url = stack.url(scenario.port(stack), scenario.path)
    pool = pools.get(scenario.cold_alg) if scenario.cold_alg else None
    measured = Measured(scenario)
    estimate = 0.0
    for index, conns in enumerate((WARMUP_CONNECTIONS, *connections)):
        warmup = index == 0
        duration = WARMUP_SECONDS if warmup else seconds
        first = 0
        tokens = warm_tokens
        if pool is not None:
            # Enough unused tokens for the fastest rate seen so far, with a margin.
            pool.ensure(int(max(estimate, 8_000.0) * duration * 1.5) + 1_000)
            tokens, first = pool.path, pool.used
        result = wrk.run(url, connections=conns, seconds=duration, tokens=tokens, first_token=first)
        if pool is not None:
            pool.advance(result.requests + conns)  # in-flight requests took tokens too
        if result.errors:
            raise ScenarioError(
                f"{scenario.key}: {result.errors} errors at {conns} connections "
                f"({result.non_2xx} non-2xx answers) out of {result.requests} requests"
            )
        estimate = max(estimate, result.rps)
        if warmup:
            reused = f" (reused tokens: {result.wrapped})" if pool and result.wrapped else ""
            log(f"  {scenario.key}: warm-up {result.rps:,.0f} req/s{reused}")
            continue
        measured.runs.append(result)
        log(
            f"  {scenario.key}: c={conns:<3} {result.rps:>9,.0f} req/s  "
            f"p50 {result.p50_us:>6} us  p99 {result.p99_us:>6} us"
            + (
                f"  (reused tokens: {result.wrapped})"
                if pool is not None and result.wrapped
                else ""
            )
        )
    return measured
