"""The load scenarios and how one is measured: a warm-up, then one bounded wrk run per
concurrency level, every request checked to have been answered 200.

    1   bare       a bare uvicorn endpoint answering 200 (the ceiling of the server stack)
    2   warm       ztauthz's check endpoint, directly, the same token every request
    2i  warm-no-allow-lines  the same with allow lines sampled out of the decision log: what
                   the log costs (target: at most 10%)
    3   cold-rs    ztauthz's check endpoint, directly, a different RS256 token every request
    3   cold-es    the same with ES256 tokens
    4   envoy      Envoy to the upstream, no authorization
    5   native     Envoy with jwt_authn + rbac (the in-proxy floor)
    6   ext-http   Envoy with ztauthz over HTTP ext_authz
    6i  ext-http-bare  the same Envoy asking the bare endpoint instead (which allows anything):
                   the ceiling of an HTTP authorization service on uvicorn
    6n  ext-http-envoy the same Envoy asking a second Envoy that answers 200 itself
                   (direct_response): the physical ceiling of any HTTP authorization service
    6b  ext-grpc   Envoy with ztauthz over gRPC ext_authz

Every scenario sends the same request (``GET /invoices/42`` with a bearer token) through the
same wrk script; the Envoy scenarios all forward to the bare endpoint as their upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.dev.procs import ManagedProcess
from app.dev.stack import http_request
from bench import policies, wrk
from bench.loadstack import LoadStack, cpu_seconds
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
        "the same, allow lines sampled out of the decision log",
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
        "ext-http-bare",
        "6i",
        "Envoy + HTTP ext_authz to the bare uvicorn endpoint (the Python ceiling)",
        lambda s: s.envoy_ports["http-bare"],
        policies.PATH,
    ),
    Scenario(
        "ext-http-envoy",
        "6n",
        "Envoy + HTTP ext_authz to an Envoy answering 200 itself (the physical ceiling)",
        lambda s: s.envoy_ports["http-envoy"],
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
    """Every run of one scenario; a concurrency level may have been measured more than once
    (rounds), and then stands for the run with the median req/s."""

    scenario: Scenario
    runs: list[wrk.RunResult] = field(default_factory=list)
    # Per run (same order as runs): CPU microseconds per request, by process name.
    cpu: list[Mapping[str, float]] = field(default_factory=list)

    def add(self, run: wrk.RunResult, cpu: Mapping[str, float]) -> None:
        self.runs.append(run)
        self.cpu.append(cpu)

    def at(self, connections: int) -> wrk.RunResult:
        found = sorted((r for r in self.runs if r.connections == connections), key=_rps)
        if not found:
            raise KeyError(f"{self.scenario.key}: no run at {connections} connections")
        return found[(len(found) - 1) // 2]

    def cpu_at(self, connections: int) -> Mapping[str, float]:
        """CPU microseconds per request, by process, of the run ``at(connections)``."""
        run = self.at(connections)
        return self.cpu[next(i for i, r in enumerate(self.runs) if r is run)]

    def levels(self) -> list[wrk.RunResult]:
        """One run per concurrency level (the median one), by concurrency."""
        return [self.at(c) for c in sorted({r.connections for r in self.runs})]


def _rps(run: wrk.RunResult) -> float:
    return run.rps


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
    processes: Sequence[ManagedProcess] = (),
) -> Measured:
    """Warm up, then one run per concurrency level. Cold scenarios take fresh tokens from
    their pool for every run (the pool grows before a run, never during one)."""
    measured = Measured(scenario)
    estimate = 0.0
    for index, conns in enumerate((WARMUP_CONNECTIONS, *connections)):
        warmup = index == 0
        duration = WARMUP_SECONDS if warmup else seconds
        result, cpu = one_run(
            stack, scenario, conns, duration, warm_tokens, pools, estimate, processes
        )
        estimate = max(estimate, result.rps)
        if warmup:
            cold = scenario.cold_alg is not None and result.wrapped
            reused = f" (reused tokens: {result.wrapped})" if cold else ""
            log(f"  {scenario.key}: warm-up {result.rps:,.0f} req/s{reused}")
            continue
        measured.add(result, cpu)
        log(describe(scenario, result, cpu))
    return measured


def one_run(
    stack: LoadStack,
    scenario: Scenario,
    connections: int,
    seconds: int,
    warm_tokens: Path,
    pools: dict[str, TokenPool],
    estimate: float = 0.0,
    processes: Sequence[ManagedProcess] = (),
) -> tuple[wrk.RunResult, dict[str, float]]:
    """One bounded wrk run of ``scenario``; a cold one takes unused tokens from its pool
    (grown before the run, for ``estimate`` req/s or more, never during it). Returns the
    result and the CPU microseconds per request each of ``processes`` spent during the run
    (those that spent some)."""
    url = stack.url(scenario.port(stack), scenario.path)
    pool = pools.get(scenario.cold_alg) if scenario.cold_alg else None
    first = 0
    tokens = warm_tokens
    if pool is not None:
        # Enough unused tokens for the fastest rate seen so far, with a margin.
        pool.ensure(int(max(estimate, 8_000.0) * seconds * 1.5) + 1_000)
        tokens, first = pool.path, pool.used
    before = cpu_seconds(processes)
    result = wrk.run(
        url, connections=connections, seconds=seconds, tokens=tokens, first_token=first
    )
    after = cpu_seconds(processes)
    per_request = {
        name: round((after[name] - spent) / result.requests * 1e6, 1)
        for name, spent in before.items()
        if name in after and result.requests and after[name] - spent > 0.02 * seconds
    }
    if pool is not None:
        pool.advance(result.requests + connections)  # in-flight requests took tokens too
    if result.errors:
        raise ScenarioError(
            f"{scenario.key}: {result.errors} errors at {connections} connections "
            f"({result.non_2xx} non-2xx answers) out of {result.requests} requests"
        )
    return result, per_request


def describe(
    scenario: Scenario, result: wrk.RunResult, cpu: Mapping[str, float] | None = None
) -> str:
    cold = scenario.cold_alg is not None and result.wrapped
    reused = f"  (reused tokens: {result.wrapped})" if cold else ""
    spent = ""
    if cpu:
        top = sorted(cpu.items(), key=lambda item: -item[1])[:3]
        spent = "  CPU us/req: " + ", ".join(f"{name} {us:.0f}" for name, us in top)
    return (
        f"  {scenario.key}: c={result.connections:<3} {result.rps:>9,.0f} req/s  "
        f"p50 {result.p50_us:>6} us  p99 {result.p99_us:>6} us{reused}{spent}"
    )
