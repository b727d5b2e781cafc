"""In-process micro-benchmarks (no sockets): what one decision costs, and how policy
evaluation scales with the number of rules.

- ``pipeline``: ``Checker.check`` (the pipeline plus telemetry: metrics, the decision-log
  line formatted and queued for its writer) on the benchmark request, with the token cache
  warm (the same token) and cold (a different token every call, RS256 and ES256);
- ``assertion``: the same warm decision without and with the signed identity assertion
  (app/assertion/, ES256): reused as ``serve`` reuses it, and signed on every allow
  (``cache_size: 0``);
- ``dpop``: the same warm decision with a bearer token, and with a DPoP-bound token (``cnf.jkt``)
  presented with a fresh ES256 proof each request (RFC 9449: the proof verified, its ``jti``
  added to the replay cache), interleaved;
- ``decision_log_encoding``: one decision-log line of the benchmark's allow, encoded by the
  standard library's ``json``, msgspec (when installed) and orjson, which ztauthz uses;
- ``policy``: ``evaluate`` of the benchmark request at 10, 100, 1,000 and 10,000 rules;
- ``collector``: how long a full collection of Python's cyclic garbage collector holds the
  interpreter (every check waits) with 10,000 rules loaded, in milliseconds: with nothing
  frozen, after a reload of the policies without ``app.heap.settle``, and with it (what
  ``ztauthz serve`` does at start and after every reload).

Each figure is the median of several timed batches, in microseconds per call.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app import heap
from app.check import Checker
from app.identity.principal import Principal, principal_from_claims
from app.policy.evaluate import PolicyInput, evaluate
from app.policy.loader import load_policy_dir
from app.request import RequestContext
from bench import inprocess, policies

RULE_COUNTS = (10, 100, 1_000, 10_000)


def _median_us(batches: list[float], per_batch: int) -> float:
    return statistics.median(batches) / per_batch * 1e6


async def time_checks(checker: Checker, contexts: list[RequestContext], batches: int) -> float:
    """Median microseconds per ``check`` over ``batches`` passes of ``contexts``."""
    timings = []
    for _ in range(batches):
        started = time.perf_counter()
        for ctx in contexts:
            await checker.check(ctx)
        timings.append(time.perf_counter() - started)
    return _median_us(timings, len(contexts))


async def pipeline(workdir: Path, log: Callable[[str], None]) -> dict[str, float]:
    """Microseconds per decision through the pipeline, token cache warm and cold."""
    policy_dir = policies.write_policy_dir(workdir / "micro-policies", 10)
    results: dict[str, float] = {}
    with inprocess.dev_issuer(workdir) as issuer:
        settings = inprocess.settings_for(issuer.url, policy_dir)
        cold = {alg: issuer.tokens(1_000, alg) for alg in ("RS256", "ES256")}
        warm = inprocess.context(issuer.token())
        async with inprocess.running(settings) as runtime:
            checker = Checker(runtime)
            if not (await checker.check(warm)).allow:
                raise RuntimeError("the benchmark request must be allowed")
            await time_checks(checker, [warm] * 2_000, 1)  # warm-up
            results["cached_us"] = await time_checks(checker, [warm] * 5_000, 7)
            for alg, tokens in cold.items():
                contexts = [inprocess.context(token) for token in tokens]
                # Each batch takes fresh tokens: a token once verified would be a cache hit.
                timings = []
                for start in range(0, len(contexts), 200):
                    began = time.perf_counter()
                    for ctx in contexts[start : start + 200]:
                        await checker.check(ctx)
                    timings.append(time.perf_counter() - began)
                results[f"uncached_{alg.lower()}_us"] = _median_us(timings, 200)
    log(
        "  pipeline: cached {cached_us:.1f} us, uncached RS256 {uncached_rs256_us:.1f} us, "
        "ES256 {uncached_es256_us:.1f} us per decision".format(**results)
    )
    return results


def _assertion_key(directory: Path) -> Path:
    """One ES256 (P-256) signing key, as ``assertion.keys`` reads it."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    (directory / "bench.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return directory


async def assertion(workdir: Path, log: Callable[[str], None]) -> dict[str, float]:
    """Microseconds per warm decision without the assertion, with it (reused: what ``serve``
    does) and with it signed on every allow, the runs interleaved, the median counting; and
    the assertion step alone (``AssertionSigner.attach``), reused and signed."""
    policy_dir = policies.write_policy_dir(workdir / "assertion-policies", 10)
    keys = _assertion_key(workdir / "assertion-keys")
    section = {
        "enabled": True,
        "issuer": "https://ztauthz.bench",
        "audience": "https://upstream.bench",
        "keys": keys,
    }
    variants = {
        "without_us": {},
        "with_us": {"assertion": section},
        "signed_each_us": {"assertion": {**section, "cache_size": 0}},
    }
    timings: dict[str, list[float]] = {name: [] for name in variants}
    with inprocess.dev_issuer(workdir) as issuer:
        warm = inprocess.context(issuer.token())
        async with contextlib.AsyncExitStack() as stack:
            checkers: dict[str, Checker] = {}
            for name, overrides in variants.items():
                settings = inprocess.settings_for(issuer.url, policy_dir, **overrides)
                runtime = await stack.enter_async_context(inprocess.running(settings))
                checker = checkers[name] = Checker(runtime)
                decision = await checker.check(warm)
                if not decision.allow or (decision.assertion is None) != (name == "without_us"):
                    raise RuntimeError(f"{name}: the benchmark request must be allowed")
                await time_checks(checker, [warm] * 1_000, 1)  # warm-up
            for _ in range(7):
                for name, checker in checkers.items():
                    timings[name].append(await time_checks(checker, [warm] * 2_000, 1))
            # The signing step alone: AssertionSigner.attach on an allowed decision.
            for name, attach_name in (
                ("with_us", "attach_reused_us"),
                ("signed_each_us", "attach_signed_us"),
            ):
                runtime = checkers[name].runtime
                signer = runtime.assertions
                assert signer is not None
                decision = await checkers["without_us"].check(warm)
                now = runtime.now()
                batches = []
                for _ in range(7):
                    began = time.perf_counter()
                    for _ in range(1_000):
                        signer.attach(decision, warm, now)
                    batches.append(time.perf_counter() - began)
                timings[attach_name] = [_median_us(batches, 1_000)]
    results = {name: round(statistics.median(values), 2) for name, values in timings.items()}
    results["reused_cost_us"] = round(results["with_us"] - results["without_us"], 2)
    results["signed_cost_us"] = round(results["signed_each_us"] - results["without_us"], 2)
    log(
        "  assertion: {without_us:.1f} us per decision without, {with_us:.1f} us with it "
        "(+{reused_cost_us:.1f} us, reused), {signed_each_us:.1f} us signed on every allow "
        "(+{signed_cost_us:.1f} us); the step alone: {attach_reused_us:.1f} us reused, "
        "{attach_signed_us:.1f} us signed".format(**results)
    )
    return results


async def dpop(workdir: Path, log: Callable[[str], None]) -> dict[str, float]:
    """Microseconds per warm decision with a bearer token, and with a DPoP-bound token and a
    fresh proof (ES256, minted beforehand) each request: what checking a proof costs."""
    from app.dev.dpop import DpopKey
    from app.dev.tokens import identity_device_claims

    policy_dir = policies.write_policy_dir(workdir / "dpop-policies", 10)
    key = DpopKey.generate("ES256")
    batch, batches = 1_000, 7
    timings: dict[str, list[float]] = {"bearer_us": [], "dpop_us": []}
    with inprocess.dev_issuer(workdir) as issuer:
        settings = inprocess.settings_for(issuer.url, policy_dir)
        bearer = inprocess.context(issuer.token())
        bound_token = issuer.token(extra_claims=identity_device_claims(cnf_jkt=key.jkt))
        url = f"https://api.example.com{policies.PATH}"
        proofs = [
            key.proof(policies.METHOD, url, access_token=bound_token)
            for _ in range(batch * (batches + 1))
        ]
        bound = [inprocess.dpop_context(bound_token, proof) for proof in proofs]
        async with inprocess.running(settings) as runtime:
            checker = Checker(runtime)
            for ctx in (bearer, bound[0]):
                if not (await checker.check(ctx)).allow:
                    raise RuntimeError("the benchmark request must be allowed")
            await time_checks(checker, [bearer] * batch, 1)  # warm-up
            for index in range(batches):
                timings["bearer_us"].append(await time_checks(checker, [bearer] * batch, 1))
                fresh = bound[1 + index * batch : 1 + (index + 1) * batch]
                timings["dpop_us"].append(await time_checks(checker, fresh, 1))
    results = {name: round(statistics.median(values), 2) for name, values in timings.items()}
    results["dpop_cost_us"] = round(results["dpop_us"] - results["bearer_us"], 2)
    log(
        "  dpop: {bearer_us:.1f} us per decision as a bearer token, {dpop_us:.1f} us DPoP-bound "
        "with a fresh proof (+{dpop_cost_us:.1f} us)".format(**results)
    )
    return results


def _benchmark_principal() -> Principal:
    """The principal of the benchmark request, built from its claims without a token."""
    return principal_from_claims(
        {
            "sub": policies.SUBJECT,
            "groups": list(policies.GROUPS),
            "scope": " ".join(policies.SCOPES),
            "exp": 2_000_000_000,
            "iat": 1_999_999_000,
            "aud": "https://api.example.com",
        },
        "https://idp.example",
        "groups",
        "scope",
    )


def decision_log_encoding(workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Microseconds to encode one decision-log line (the benchmark allow, every field of the
    v2 line), by the standard library, msgspec (if installed) and orjson; and its size."""
    import json

    import orjson

    from app.decision import Decision
    from app.reasons import Reason
    from app.telemetry.decision_log import compact, decision_line
    from app.telemetry.subject import subject_view

    principal = _benchmark_principal()
    decision = Decision(
        True,
        Reason.ALLOWED,
        "d-0123456789abcdef",
        "v-bench",
        rule_id=str(policies.BENCH_RULE["id"]),
        policy="bench",
        principal=principal,
    )
    ctx = inprocess.context("x")
    entry = (time.time(), ctx, decision, "d-0123456789abcdef", 42, None, None)
    complete = decision_line(entry, subject_view(None))  # schema 1 wrote every field
    line = compact(complete)  # what schema 2 writes
    encoders: dict[str, Callable[[dict[str, Any]], bytes]] = {
        "json (stdlib)": lambda obj: json.dumps(obj, separators=(",", ":")).encode(),
        "orjson": orjson.dumps,
    }
    try:
        import msgspec

        encoders["msgspec"] = msgspec.json.Encoder().encode
    except ImportError:
        pass
    timings: dict[str, float] = {}
    for name, encode in encoders.items():
        batches = []
        for _ in range(7):
            began = time.perf_counter()
            for _ in range(10_000):
                encode(line)
            batches.append(time.perf_counter() - began)
        timings[name] = round(_median_us(batches, 10_000), 3)
    results = {
        "bytes_v1": len(orjson.dumps({**complete, "schema": 1})),
        "bytes_v2": len(orjson.dumps(line)),
        "encode_us": timings,
    }
    log(
        f"  decision log: one line of {results['bytes_v2']} bytes (schema 1: "
        f"{results['bytes_v1']}) encoded in "
        + ", ".join(f"{us:.2f} us ({name})" for name, us in timings.items())
    )
    return results


def policy_scaling(workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Microseconds to evaluate the benchmark request among N rules."""
    principal = _benchmark_principal()
    request = PolicyInput(method=policies.METHOD, host="api.example.com", path=policies.PATH)
    now = time.time()
    timings: dict[str, float] = {}
    loads: dict[str, float] = {}
    for count in RULE_COUNTS:
        directory = policies.write_policy_dir(workdir / f"rules-{count}", count)
        started = time.perf_counter()
        compiled = load_policy_dir(directory)
        loads[str(count)] = round(time.perf_counter() - started, 3)
        verdict = evaluate(compiled, request, principal, now)
        if not verdict.allow or verdict.rule_id != policies.BENCH_RULE["id"]:
            raise RuntimeError(f"{count} rules: the benchmark request must be allowed")
        batches = []
        for _ in range(7):
            began = time.perf_counter()
            for _ in range(5_000):
                evaluate(compiled, request, principal, now)
            batches.append(time.perf_counter() - began)
        timings[str(count)] = round(_median_us(batches, 5_000), 3)
        log(f"  policy: {count:>6} rules  {timings[str(count)]:.2f} us per evaluation")
    ratio = timings[str(RULE_COUNTS[-1])] / timings[str(RULE_COUNTS[0])]
    return {"evaluate_us": timings, "load_seconds": loads, "ratio_10000_to_10": round(ratio, 3)}


def _full_collection_ms(repeat: int = 5) -> float:
    timings = []
    for _ in range(repeat):
        began = time.perf_counter()
        gc.collect()
        timings.append(time.perf_counter() - began)
    return _median_us(timings, 1) / 1e3


def collector_pause(workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Milliseconds a full collection takes with 10,000 rules loaded: nothing frozen; the
    service settled at start, then reloaded the policies (new objects, not frozen); and
    settled again after that reload. This process stands in for the service (its own
    modules differ a little); the process is left unfrozen."""
    directory = policies.write_policy_dir(workdir / "collector-rules", RULE_COUNTS[-1])
    loaded = load_policy_dir(directory)
    try:
        unfrozen_ms = _full_collection_ms()
        heap.settle()  # the service starting
        reloaded = load_policy_dir(directory)  # a reload: the same rules, compiled anew
        del loaded
        reloaded_ms = _full_collection_ms()
        settled = heap.settle()  # what the reloader now does after the swap
        settled_ms = _full_collection_ms()
        del reloaded
    finally:
        gc.unfreeze()
    results = {
        "rules": RULE_COUNTS[-1],
        "unfrozen_ms": round(unfrozen_ms, 2),
        "reloaded_unsettled_ms": round(reloaded_ms, 2),
        "reloaded_settled_ms": round(settled_ms, 2),
        "settle_ms": round(settled.seconds * 1e3, 2),
    }
    log(
        "  collector: a full collection with {rules:,} rules takes {unfrozen_ms:.1f} ms "
        "unfrozen, {reloaded_unsettled_ms:.1f} ms after a reload without settling, "
        "{reloaded_settled_ms:.1f} ms settled (the settle itself: {settle_ms:.1f} ms)".format(
            **results
        )
    )
    return results
