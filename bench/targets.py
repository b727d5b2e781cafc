"""The performance targets of issue 7, checked as ratios of figures from one run.

Never checked by timed unit tests: only the harness compares, and it prints each target with
the numbers it compared, PASS or MISS.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def evaluate_targets(
    rps: Mapping[str, float],
    p50_single: Mapping[str, float],
    policy_us: Mapping[str, float],
    rss_mib: float,
    rss_full_cache_mib: float,
) -> list[Target]:
    """``rps`` at THROUGHPUT_CONNECTIONS and ``p50_single`` (us) at LATENCY_CONNECTIONS, by
    scenario key; ``policy_us`` by rule count; ``rss_mib`` of one worker serving 10,000 rules
    (after warm checks), and the same once its token cache is full."""
    bare, native = rps["bare"], rps["native"]
    targets = [
        Target(
            "warm_vs_bare",
            "(2) warm check / (1) bare uvicorn, req/s",
            rps["warm"] / bare,
            0.5,
            False,
            "x",
            f"{rps['warm']:,.0f} / {bare:,.0f} req/s at c={THROUGHPUT_CONNECTIONS}",
        ),
        Target(
            "cold_rs256_vs_bare",
            "(3) cold RS256 check / (1) bare uvicorn, req/s",
            rps["cold-rs256"] / bare,
            0.2,
            False,
            "x",
            f"{rps['cold-rs256']:,.0f} / {bare:,.0f} req/s at c={THROUGHPUT_CONNECTIONS}",
        ),
    ]
    for key, name in (("ext-http", "(6)"), ("ext-grpc", "(6b)")):
        targets.append(
            Target(
                f"{key}_vs_native",
                f"{name} Envoy+ztauthz / (5) Envoy jwt_authn+rbac, req/s",
                rps[key] / native,
                0.6,
                False,
                "x",
                f"{rps[key]:,.0f} / {native:,.0f} req/s at c={THROUGHPUT_CONNECTIONS}",
            )
        )
        targets.append(
            Target(
                f"{key}_p50_over_native",
                f"{name} p50 latency above (5) at one connection",
                (p50_single[key] - p50_single["native"]) / 1000,
                0.5,
                True,
                " ms",
                f"{p50_single[key]:.0f} us vs {p50_single['native']:.0f} us",
            )
        )
    targets.append(
        Target(
            "policy_flat",
            "policy evaluation at 10,000 rules / at 10 rules",
            policy_us["10000"] / policy_us["10"],
            2.0,
            True,
            "x",
            f"{policy_us['10000']:.2f} us vs {policy_us['10']:.2f} us",
        )
    )
    targets.append(
        Target(
            "memory_10k_rules",
            "resident memory of one worker with 10,000 rules",
            rss_mib,
            120.0,
            True,
            " MiB",
            "VmRSS serving 10,000 rules after warm checks; "
            f"{rss_full_cache_mib:.1f} MiB once its token cache is full",
        )
    )
    return targets
