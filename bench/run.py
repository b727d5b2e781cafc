"""``make bench`` (``python -m bench.run``): every scenario, the micro-benchmarks, the targets.

Starts everything on loopback (bench/loadstack.py), drives each scenario with wrk in bounded
runs after a warm-up (bench/scenarios.py), measures one worker's memory with 10,000 rules,
runs the in-process micro-benchmarks (bench/micro.py), prints one table with requests/s,
p50, p99 and the ratios, then each target PASS or MISS with its numbers (bench/targets.py),
and writes bench/results/ (JSON, Markdown, PNG). Everything it starts is stopped at the end,
also on failure or Ctrl-C. The default run takes about seven minutes on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from app.dev.envoy import find_envoy
from app.dev.ports import free_port
from app.dev.procs import ProcessError, ProcessGroup
from bench import loadstack, micro, policies, report, scenarios, wrk
from bench.targets import LATENCY_CONNECTIONS, THROUGHPUT_CONNECTIONS, evaluate_targets
from bench.tokens import TokenPool, mint_many

REPO = Path(__file__).resolve().parents[1]
CONNECTIONS = (1, 8, THROUGHPUT_CONNECTIONS, 64)
MEMORY_RULES = 10_000


def _log(message: str) -> None:
    print(message, flush=True)


def cache_counts(admin_url: str) -> dict[str, float]:
    """The token cache's counters from a ztauthz admin /metrics."""
    text = httpx.get(f"{admin_url}/metrics", timeout=5).text
    found: dict[str, float] = {}
    pattern = r'^ztauthz_token_cache_(lookups_total\{result="(\w+)"\}|entries) (\S+)$'
    for match in re.finditer(pattern, text, re.MULTILINE):
        name = match.group(2) or "entries"
        found[name] = float(match.group(3))
    return found


def machine_info(seconds: int) -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def output(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return (done.stdout + done.stderr).strip()

    envoy_version = output([str(find_envoy()), "--version"])
    match = re.search(r"/(\d+\.\d+\.\d+)/", envoy_version)
    commit = output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = output(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    wrk_version = output([wrk.find_wrk(), "--version"]).splitlines()[0].split(" [")[0]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "envoy": match.group(1) if match else envoy_version[:40],
        "wrk": wrk_version,
        "commit": commit + ("+local changes" if dirty else ""),
        "seconds": seconds,
    }


def memory_at_10k_rules(
    stack: loadstack.LoadStack,
    group: ProcessGroup,
    workdir: Path,
    pool: TokenPool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """VmRSS of a ztauthz worker serving 10,000 rules: after warm checks, then with its
    token cache full (every entry a distinct ES256 token, each verified once)."""
    policy_dir = policies.write_policy_dir(workdir / "policies-10k", MEMORY_RULES)
    check, admin = free_port(), free_port()
    config = loadstack.ztauthz_config(
        workdir,
        "ztauthz-10k",
        issuer_url=stack.issuer_url,
        policies=policy_dir,
        check_port=check,
        admin_port=admin,
    )
    process = loadstack.ztauthz_process(
        workdir, "ztauthz-10k", config, admin, loadstack.child_env()
    )
    group.start(process)
    assert process.pid is not None
    url = f"http://127.0.0.1:{check}{scenarios.CHECK_PREFIX}{policies.PATH}"
    warm = wrk.run(url, connections=4, seconds=1, tokens=stack.workdir / "warm-token.txt")
    idle = loadstack.resident_kib(process.pid) / 1024
    capacity = 10_000
    pool.ensure(capacity + 2_000)
    filled = 0
    while cache_counts(f"http://127.0.0.1:{admin}").get("entries", 0) < capacity:
        pool.ensure(capacity + 2_000)
        result = wrk.run(url, connections=8, seconds=2, tokens=pool.path, first_token=pool.used)
        pool.advance(result.requests + 8)
        filled += result.requests
        if filled > 5 * capacity:
            raise RuntimeError("the token cache did not fill up")
    entries = int(cache_counts(f"http://127.0.0.1:{admin}")["entries"])
    loaded = loadstack.resident_kib(process.pid) / 1024
    process.stop()
    log(
        f"  memory: {MEMORY_RULES:,} rules: {idle:.1f} MiB after {warm.requests:,} warm "
        f"checks, {loaded:.1f} MiB with {entries:,} tokens cached"
    )
    return {
        "rules": MEMORY_RULES,
        "idle_mib": round(idle, 1),
        "loaded_mib": round(loaded, 1),
        "cache_entries": entries,
    }


def load_scenarios(
    workdir: Path,
    seconds: int,
    connections: tuple[int, ...],
    rounds: int,
    group: ProcessGroup,
    selected: tuple[scenarios.Scenario, ...] = scenarios.SCENARIOS,
    memory: bool = True,
) -> tuple[list[scenarios.Measured], dict[str, Any], dict[str, Any] | None]:
    policy_dir = policies.write_policy_dir(workdir / "policies", 1)
    _log("starting the issuer, bare endpoint, three ztauthz and seven Envoys on 127.0.0.1 ...")
    stack = loadstack.start_load_stack(group, workdir, policy_dir)
    warm_tokens = workdir / "warm-token.txt"
    warm_tokens.write_text(
        mint_many(workdir / "keys", stack.issuer_url, "RS256", 1)[0] + "\n", encoding="ascii"
    )
    token = warm_tokens.read_text(encoding="ascii").strip()
    pools = {
        alg: TokenPool(workdir / f"tokens-{alg}.txt", workdir / "keys", stack.issuer_url, alg)
        for alg in ("RS256", "ES256")
    }
    measured = []
    cache: dict[str, Any] = {}
    for scenario in selected:
        _log(f"({scenario.number}) {scenario.title}")
        scenarios.check_answers(stack, scenario, token)
        direct = scenario.key.startswith(("warm", "cold"))
        server = stack.http_no_allow_lines if scenario.key == "warm-no-allow-lines" else stack.http
        before = cache_counts(server.admin_url) if direct else {}
        measured.append(
            scenarios.measure(
                stack,
                scenario,
                connections=connections,
                seconds=seconds,
                warm_tokens=warm_tokens,
                pools=pools,
                log=_log,
                processes=group.processes,
            )
        )
        if direct:
            after = cache_counts(server.admin_url)
            hits = after.get("hit", 0) - before.get("hit", 0)
            misses = after.get("miss", 0) - before.get("miss", 0)
            ratio = hits / (hits + misses) if hits + misses else 0.0
            cache[scenario.key] = {"hits": int(hits), "misses": int(misses), "hit_ratio": ratio}
            _log(f"  token cache: {ratio:.1%} hits ({int(hits):,} hits, {int(misses):,} misses)")
    for round_number in range(2, rounds + 1):
        # The machine is shared and drifts: every scenario again at the throughput
        # concurrency, interleaved, and the median run of each counts.
        _log(f"round {round_number} of {rounds} at c={THROUGHPUT_CONNECTIONS}")
        for m in measured:
            estimate = m.at(THROUGHPUT_CONNECTIONS).rps
            result, cpu = scenarios.one_run(
                stack,
                m.scenario,
                THROUGHPUT_CONNECTIONS,
                seconds,
                warm_tokens,
                pools,
                estimate,
                group.processes,
            )
            m.add(result, cpu)
            _log(scenarios.describe(m.scenario, result, cpu))
    used = memory_at_10k_rules(stack, group, workdir, pools["ES256"], _log) if memory else None
    return measured, cache, used


def run(
    seconds: int,
    connections: tuple[int, ...],
    rounds: int,
    out: Path,
    workdir: Path,
    selected: tuple[scenarios.Scenario, ...] = scenarios.SCENARIOS,
    full: bool = True,
) -> int:
    """Every scenario in ``selected``; with ``full`` also the memory and in-process
    measurements (a subset run for iterating leaves them out)."""
    started = time.monotonic()
    machine = {**machine_info(seconds), "rounds": rounds}
    with ProcessGroup() as group:
        measured, cache, memory = load_scenarios(
            workdir, seconds, connections, rounds, group, selected, memory=full
        )
    micro_results: dict[str, Any] = {"token_cache": cache}
    if full:
        _log("in-process micro-benchmarks ...")
        micro_results.update(
            pipeline=asyncio.run(micro.pipeline(workdir, _log)),
            assertion=asyncio.run(micro.assertion(workdir, _log)),
            dpop=asyncio.run(micro.dpop(workdir, _log)),
            decision_log=micro.decision_log_encoding(workdir, _log),
            policy=micro.policy_scaling(workdir, _log),
            collector=micro.collector_pause(workdir, _log),
        )
    by_key = {m.scenario.key: m for m in measured}
    targets = evaluate_targets(
        rps={k: m.at(THROUGHPUT_CONNECTIONS).rps for k, m in by_key.items()},
        p50_single={k: float(m.at(LATENCY_CONNECTIONS).p50_us) for k, m in by_key.items()},
        micro=micro_results,
        memory=memory,
    )
    paths = report.write_results(out, measured, targets, micro_results, memory, machine)
    rows = report.table_rows(measured)
    _log("")
    _log(report.text_table(rows))
    _log("")
    for target in targets:
        _log(target.line())
    met = sum(t.met for t in targets)
    _log(f"\n{met} of {len(targets)} targets met; results in {', '.join(map(str, paths.values()))}")
    _log(f"the whole run took {time.monotonic() - started:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="length of each run (3)")
    parser.add_argument(
        "--connections",
        default=",".join(map(str, CONNECTIONS)),
        help=f"concurrency levels ({','.join(map(str, CONNECTIONS))}); must include "
        f"{LATENCY_CONNECTIONS} and {THROUGHPUT_CONNECTIONS}",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help=f"runs of every scenario at c={THROUGHPUT_CONNECTIONS}, interleaved; the median "
        "counts (3)",
    )
    parser.add_argument("--out", type=Path, default=report.RESULTS, help="results directory")
    parser.add_argument("--workdir", type=Path, help="keep keys, configs and logs here")
    parser.add_argument(
        "--scenarios",
        help="only these scenarios, by key or number, comma-separated (e.g. 6,6b,6i,6n), "
        "without the memory and in-process measurements: for iterating; the results "
        "directory then gets only what was measured (use --out elsewhere)",
    )
    args = parser.parse_args(argv)
    selected = scenarios.SCENARIOS
    if args.scenarios:
        wanted = {name.strip() for name in args.scenarios.split(",")}
        selected = tuple(s for s in scenarios.SCENARIOS if {s.key, s.number} & wanted)
        known = {s.key for s in scenarios.SCENARIOS} | {s.number for s in scenarios.SCENARIOS}
        if not selected or wanted - known:
            parser.error(f"--scenarios: unknown {sorted(wanted - known)}; known: {sorted(known)}")
    connections = tuple(sorted({int(c) for c in args.connections.split(",")}))
    if not {LATENCY_CONNECTIONS, THROUGHPUT_CONNECTIONS} <= set(connections):
        parser.error(
            f"--connections must include {LATENCY_CONNECTIONS} and {THROUGHPUT_CONNECTIONS}"
        )
    try:
        wrk.find_wrk()
        find_envoy()
        if args.workdir is not None:
            return run(
                args.seconds,
                connections,
                args.rounds,
                args.out,
                args.workdir,
                selected,
                full=not args.scenarios,
            )
        with tempfile.TemporaryDirectory(prefix="ztauthz-bench-") as tmp:
            return run(
                args.seconds,
                connections,
                args.rounds,
                args.out,
                Path(tmp),
                selected,
                full=not args.scenarios,
            )
    except (wrk.WrkError, scenarios.ScenarioError, ProcessError, FileNotFoundError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; everything started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
