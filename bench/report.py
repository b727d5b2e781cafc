"""The results of one run: the table on stdout, and bench/results/ (JSON, Markdown, PNG)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.scenarios import Measured
from bench.targets import LATENCY_CONNECTIONS, THROUGHPUT_CONNECTIONS, Target

RESULTS = Path(__file__).resolve().parent / "results"
JSON_FILE = "results.json"
MARKDOWN_FILE = "results.md"
PLOT_FILE = "latency.png"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def table_rows(measured: Sequence[Measured]) -> list[list[str]]:
    """One row per scenario: req/s and ratios at the throughput concurrency, p50/p99 at one
    connection and at the throughput concurrency."""
    by_key = {m.scenario.key: m for m in measured}
    bare = by_key["bare"].at(THROUGHPUT_CONNECTIONS).rps if "bare" in by_key else 0.0
    native = by_key["native"].at(THROUGHPUT_CONNECTIONS).rps if "native" in by_key else 0.0
    rows = []
    for m in measured:
        busy = m.at(THROUGHPUT_CONNECTIONS)
        single = m.at(LATENCY_CONNECTIONS)
        envoy = m.scenario.number[0] in "456"
        rows.append(
            [
                m.scenario.number,
                m.scenario.title,
                f"{busy.rps:,.0f}",
                _ratio(busy.rps, bare),
                _ratio(busy.rps, native) if envoy else "",
                f"{single.p50_us:,}",
                f"{single.p99_us:,}",
                f"{busy.p50_us:,}",
                f"{busy.p99_us:,}",
                _cpu(m.cpu_at(THROUGHPUT_CONNECTIONS)),
            ]
        )
    return rows


def _cpu(cpu: Mapping[str, float]) -> str:
    """The processes that spent CPU on the scenario, most first: ``name us`` per request."""
    top = sorted(cpu.items(), key=lambda item: -item[1])[:3]
    return ", ".join(f"{name} {us:,.0f}" for name, us in top)


HEADERS = [
    "#",
    "scenario",
    f"req/s (c={THROUGHPUT_CONNECTIONS})",
    "x (1)",
    "x (5)",
    f"p50 us (c={LATENCY_CONNECTIONS})",
    f"p99 us (c={LATENCY_CONNECTIONS})",
    f"p50 us (c={THROUGHPUT_CONNECTIONS})",
    f"p99 us (c={THROUGHPUT_CONNECTIONS})",
    f"CPU us per request (c={THROUGHPUT_CONNECTIONS})",
]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    right = {0, 2, 3, 4, 5, 6, 7, 8}

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([fmt(HEADERS), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] * len(HEADERS)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(
    rows: list[list[str]],
    targets: Sequence[Target],
    micro: Mapping[str, Any],
    memory: Mapping[str, Any] | None,
    machine: Mapping[str, Any],
) -> str:
    parts = [
        f"Measured {machine['date']} on {machine['cpus']} CPUs ({machine['cpu']}), "
        f"Python {machine['python']}, Envoy {machine['envoy']}, {machine['wrk']}; "
        f"commit {machine['commit']}. Each load run: {machine['seconds']:g} s of wrk "
        f"(1 thread) after a warm-up; at c={THROUGHPUT_CONNECTIONS} every scenario ran "
        f"{machine.get('rounds', 1)} times, interleaved, and the median run counts. ztauthz "
        "with one worker, decision log and metrics on, traces off (scenario 2i: allow lines "
        "sampled out of the decision log).",
        "",
        markdown_table(rows),
        "",
        "| target | measured | limit | verdict |",
        "|---|---|---|---|",
    ]
    for t in targets:
        sign = "<=" if t.at_most else ">="
        parts.append(
            f"| {t.description} | {t.value:.3g}{t.unit} ({t.detail}) | "
            f"{sign} {t.limit:g}{t.unit} | {t.verdict} |"
        )
    if "pipeline" not in micro or memory is None:  # a subset run (--scenarios)
        return "\n".join([*parts, "", f"![latency against concurrency]({PLOT_FILE})"]) + "\n"
    policy = micro["policy"]["evaluate_us"]
    pipeline = micro["pipeline"]
    parts += [
        "",
        "In-process (no sockets), microseconds per call:",
        "",
        "| measurement | us |",
        "|---|---|",
        f"| decision through the pipeline, token cached | {pipeline['cached_us']:.1f} |",
        f"| decision, token not cached (RS256) | {pipeline['uncached_rs256_us']:.1f} |",
        f"| decision, token not cached (ES256) | {pipeline['uncached_es256_us']:.1f} |",
    ]
    signed = micro.get("assertion")
    if signed is not None:
        parts += [
            f"| decision, token cached, without the signed assertion | {signed['without_us']:.1f} |",
            f"| the same with the assertion (ES256, reused as `serve` does) | "
            f"{signed['with_us']:.1f} (+{signed['reused_cost_us']:.1f}) |",
            f"| the same with the assertion signed on every allow (`cache_size: 0`) | "
            f"{signed['signed_each_us']:.1f} (+{signed['signed_cost_us']:.1f}) |",
            f"| the assertion step alone, reused / signed | "
            f"{signed['attach_reused_us']:.1f} / {signed['attach_signed_us']:.1f} |",
        ]
    dpop = micro.get("dpop")
    if dpop is not None:
        parts += [
            f"| decision, token cached, bearer (no DPoP) | {dpop['bearer_us']:.1f} |",
            f"| the same token DPoP-bound, a fresh proof (ES256) each request | "
            f"{dpop['dpop_us']:.1f} (+{dpop['dpop_cost_us']:.1f}) |",
        ]
    encoding = micro.get("decision_log")
    if encoding is not None:
        parts += [
            f"| one decision-log line ({encoding['bytes_v2']} bytes in schema 2, "
            f"{encoding.get('bytes_v1', '?')} in schema 1), encoded with {name} | {us:.2f} |"
            for name, us in encoding["encode_us"].items()
        ]
    parts += [f"| policy evaluation, {int(n):,} rules | {us:.2f} |" for n, us in policy.items()]
    collector = micro["collector"]
    parts += [
        f"| a full garbage collection, {collector['rules']:,} rules, nothing frozen | "
        f"{collector['unfrozen_ms'] * 1e3:,.0f} |",
        "| the same after a policy reload, not settled | "
        f"{collector['reloaded_unsettled_ms'] * 1e3:,.0f} |",
        "| the same after a policy reload, settled (`app/heap.py`, as `serve` does) | "
        f"{collector['reloaded_settled_ms'] * 1e3:,.0f} |",
    ]
    parts += [
        "| resident memory, one worker, 10,000 rules, after warm checks | "
        f"{memory['idle_mib']:.1f} MiB |",
        f"| the same with {memory['cache_entries']:,} tokens cached | "
        f"{memory['loaded_mib']:.1f} MiB |",
        "",
        f"![latency against concurrency]({PLOT_FILE})",
    ]
    return "\n".join(parts) + "\n"


def plot(measured: Sequence[Measured], path: Path) -> None:
    """p50 and p99 latency, and req/s, against concurrency, one line per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    for m in measured:
        runs = m.levels()
        conns = [r.connections for r in runs]
        label = f"({m.scenario.number}) {m.scenario.key}"
        axes[0].plot(conns, [r.p50_us / 1000 for r in runs], marker="o", label=label)
        axes[1].plot(conns, [r.p99_us / 1000 for r in runs], marker="o", label=label)
        axes[2].plot(conns, [r.rps for r in runs], marker="o", label=label)
    for ax, title, unit in (
        (axes[0], "p50 latency", "ms"),
        (axes[1], "p99 latency", "ms"),
        (axes[2], "throughput", "requests/s"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=8, loc="lower right")
    fig.suptitle("ztauthz benchmark: latency and throughput against concurrency (loopback)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(
    directory: Path,
    measured: Sequence[Measured],
    targets: Sequence[Target],
    micro: Mapping[str, Any],
    memory: Mapping[str, Any] | None,
    machine: Mapping[str, Any],
) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rows = table_rows(measured)
    data = {
        "machine": dict(machine),
        "throughput_connections": THROUGHPUT_CONNECTIONS,
        "latency_connections": LATENCY_CONNECTIONS,
        "scenarios": [
            {
                "key": m.scenario.key,
                "number": m.scenario.number,
                "title": m.scenario.title,
                "runs": [
                    {**r.as_dict(), "cpu_us_per_request": dict(cpu)}
                    for r, cpu in zip(m.runs, m.cpu, strict=True)
                ],
            }
            for m in measured
        ],
        "micro": dict(micro),
        "memory": dict(memory) if memory is not None else None,
        "targets": [t.as_dict() for t in targets],
    }
    paths = {
        "json": directory / JSON_FILE,
        "markdown": directory / MARKDOWN_FILE,
        "plot": directory / PLOT_FILE,
    }
    paths["json"].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(rows, targets, micro, memory, machine), encoding="utf-8")
    plot(measured, paths["plot"])
    return paths
