"""The benchmark policy, and the same policy buried among N other rules.

The benchmark request is ``GET /invoices/42`` by alice (group ``finance``, scope
``invoices:read``): allowed by ``invoices-read``. Envoy's native baseline (scenario 5)
enforces exactly this rule with ``jwt_authn`` + ``rbac`` (bench/envoy_configs.py).

The filler rules look like real ones (each its own service path, method, group and scope, a
tenth of them deny rules), kept as a large deployment keeps them: one policy file per team of
100 rules, a tenth of those files bound to hosts. The index holds N distinct patterns; none
matches the benchmark request, which therefore costs what it costs with the policy alone,
plus whatever the index lookup pays for the other N.
"""

from __future__ import annotations

from pathlib import Path

import yaml

BENCH_RULE: dict[str, object] = {
    "id": "invoices-read",
    "effect": "allow",
    "match": {"methods": ["GET"], "paths": ["/invoices", "/invoices/*"]},
    "subject": {"groups_any": ["finance", "auditors"], "scopes_all": ["invoices:read"]},
}
METHOD = "GET"
PATH = "/invoices/42"
GROUPS = ("finance",)
SCOPES = ("invoices:read",)
SUBJECT = "alice"


def filler_rule(i: int) -> dict[str, object]:
    return {
        "id": f"svc{i}-rule",
        "effect": "deny" if i % 10 == 9 else "allow",
        "match": {
            "methods": [("GET", "POST", "PUT", "DELETE")[i % 4]],
            "paths": [f"/svc{i}/items/*", f"/svc{i}/items/*/parts/**"],
        },
        "subject": {"groups_any": [f"team{i % 97}"], "scopes_all": [f"svc{i}:use"]},
    }


RULES_PER_FILE = 100  # one policy file per service team, as a large deployment keeps them


def policy_files(rules: int) -> dict[str, list[dict[str, object]]]:
    """``rules`` rules in all, as file name -> policy documents: ``bench.yaml`` holds the
    benchmark rule, the other ``rules - 1`` are spread over files of RULES_PER_FILE rules,
    a tenth of those files bound to hosts."""
    if rules < 1:
        raise ValueError("at least the benchmark rule")
    files: dict[str, list[dict[str, object]]] = {"bench.yaml": [_policy("bench", [BENCH_RULE])]}
    fillers = [filler_rule(i) for i in range(rules - 1)]
    for block, start in enumerate(range(0, len(fillers), RULES_PER_FILE)):
        chunk = fillers[start : start + RULES_PER_FILE]
        hosts = {"hosts": [f"svc{block}.example.com", f"*.svc{block}.example.com"]}
        spec = hosts if block % 10 == 3 else {}
        files[f"team-{block:04d}.yaml"] = [_policy(f"team-{block}", chunk, **spec)]
    return files


def _policy(name: str, rules: list[dict[str, object]], **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "ztauthz/v1",
        "kind": "Policy",
        "metadata": {"name": name},
        "spec": {**spec, "rules": rules},
    }


def write_policy_dir(directory: Path, rules: int) -> Path:
    """A policy directory holding ``policy_files(rules)``."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.yaml"):
        old.unlink()
    for name, documents in policy_files(rules).items():
        (directory / name).write_text(
            yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8"
        )
    return directory
