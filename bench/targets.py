"""The performance targets (issues 7 and 20), checked as ratios of figures from one run.

Never checked by timed unit tests: only the harness compares, and it prints each target with
the numbers it compared, PASS or MISS. A run of a subset of the scenarios (``--scenarios``)
checks the targets whose figures it measured and leaves the others out.

Issue 20 moved the Envoy targets from "a fraction of Envoy's in-proxy filters" (which no
authorization service in another process reaches here) to the two ceilings of an HTTP
authorization service: the bare uvicorn endpoint asked by the same Envoy (6i, the Python
ceiling) and a second Envoy answering 200 itself (6n, the physical one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

THROUGHPUT_CONNECTIONS = 32  # req/s ratios compare the runs at this concurrency
LATENCY_CONNECTIONS = 1  # latency targets compare the runs at this concurrency


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    description: str
    value: float
    limit: float
    at_most: bool  # True: value must be <= limit; False: value must be >= limit
    unit: str
    detail: str

    @property
    def met(self) -> bool:
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    @property
    def verdict(self) -> str:
        return "PASS" if self.met else "MISS"

    def line(self) -> str:
        sign = "<=" if self.at_most else ">="
        return (
            f"{self.verdict}  {self.description}: {self.value:.3g}{self.unit} "
            f"(target {sign} {self.limit:g}{self.unit}; {self.detail})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "description": self.description,
            "value": round(self.value, 4),
            "limit": self.limit,
            "at_most": self.at_most,
            "unit": self.unit,
            "met": self.met,
            "detail": self.detail,
        }


def _rps_ratio(
    key: str, description: str, rps: Mapping[str, float], top: str, bottom: str, limit: float
) -> Target:
    return Target(
        key,
        description,
        rps[top] / rps[bottom],
        limit,
        False,
        "x",
        f"{rps[top]:,.0f} / {rps[bottom]:,.0f} req/s at c={THROUGHPUT_CONNECTIONS}",
    )


def evaluate_targets(
    rps: Mapping[str, float],
    p50_single: Mapping[str, float],
    micro: Mapping[str, Any],
    memory: Mapping[str, Any] | None,
) -> list[Target]:
    """``rps`` at THROUGHPUT_CONNECTIONS and ``p50_single`` (us) at LATENCY_CONNECTIONS, by
    scenario key; ``micro`` the in-process results (bench/micro.py: ``pipeline``, ``policy``);
    ``memory`` of one worker serving 10,000 rules (``idle_mib`` after warm checks,
    ``loaded_mib`` once its token cache is full). Targets whose figures are missing are left
    out."""
    builders: list[Callable[[], Target]] = [
        lambda: _rps_ratio(
            "warm_vs_bare", "(2) warm check / (1) bare uvicorn, req/s", rps, "warm", "bare", 0.5
        ),
        lambda: Target(
            "decision_log_cost",
            "what the decision log costs the warm check: 1 - (2) / (2i)",
            1 - rps["warm"] / rps["warm-no-allow-lines"],
            0.10,
            True,
            "",
            f"{rps['warm']:,.0f} req/s with every allow logged vs "
            f"{rps['warm-no-allow-lines']:,.0f} without allow lines, c={THROUGHPUT_CONNECTIONS}",
        ),
        lambda: _rps_ratio(
            "cold_rs256_vs_bare",
            "(3) cold RS256 check / (1) bare uvicorn, req/s",
            rps,
            "cold-rs256",
            "bare",
            0.2,
        ),
        lambda: _rps_ratio(
            "ext_http_vs_uvicorn_ceiling",
            "(6) Envoy+ztauthz HTTP / (6i) Envoy+do-nothing uvicorn endpoint, req/s",
            rps,
            "ext-http",
            "ext-http-bare",
            0.9,
        ),
        lambda: _rps_ratio(
            "ext_http_vs_envoy_ceiling",
            "(6) Envoy+ztauthz HTTP / (6n) Envoy+Envoy answering 200, req/s",
            rps,
            "ext-http",
            "ext-http-envoy",
            0.8,
        ),
        lambda: _rps_ratio(
            "ext_grpc_vs_http",
            "(6b) Envoy+ztauthz gRPC / (6) HTTP, req/s",
            rps,
            "ext-grpc",
            "ext-http",
            0.8,
        ),
        lambda: Target(
            "ext_grpc_p50_over_http",
            "(6b) gRPC p50 latency above (6) HTTP at one connection",
            (p50_single["ext-grpc"] - p50_single["ext-http"]) / 1000,
            0.15,
            True,
            " ms",
            f"{p50_single['ext-grpc']:.0f} us vs {p50_single['ext-http']:.0f} us",
        ),
        lambda: Target(
            "ext_http_p50_over_native",
            "(6) p50 latency above (5) Envoy jwt_authn+rbac at one connection",
            (p50_single["ext-http"] - p50_single["native"]) / 1000,
            0.5,
            True,
            " ms",
            f"{p50_single['ext-http']:.0f} us vs {p50_single['native']:.0f} us",
        ),
        lambda: Target(
            "uncached_rs256_us",
            "decision in-process, token not cached, RS256",
            micro["pipeline"]["uncached_rs256_us"],
            60.0,
            True,
            " us",
            f"token cached: {micro['pipeline']['cached_us']:.1f} us",
        ),
        lambda: Target(
            "uncached_es256_us",
            "decision in-process, token not cached, ES256",
            micro["pipeline"]["uncached_es256_us"],
            120.0,
            True,
            " us",
            f"token cached: {micro['pipeline']['cached_us']:.1f} us",
        ),
        lambda: Target(
            "policy_flat",
            "policy evaluation at 10,000 rules / at 10 rules",
            micro["policy"]["evaluate_us"]["10000"] / micro["policy"]["evaluate_us"]["10"],
            2.0,
            True,
            "x",
            f"{micro['policy']['evaluate_us']['10000']:.2f} us vs "
            f"{micro['policy']['evaluate_us']['10']:.2f} us",
        ),
    ]
    if memory is not None:
        builders.append(
            lambda: Target(
                "memory_10k_rules",
                "resident memory of one worker with 10,000 rules",
                memory["idle_mib"],
                120.0,
                True,
                " MiB",
                "VmRSS serving 10,000 rules after warm checks; "
                f"{memory['loaded_mib']:.1f} MiB once its token cache is full",
            )
        )
    targets = []
    for build in builders:
        try:
            targets.append(build())
        except KeyError:  # a subset run did not measure this target's figures
            continue
    return targets
