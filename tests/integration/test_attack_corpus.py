"""The attack corpus (attack_corpus.py, about a thousand attacks) through every Envoy in front of
ztauthz: the shipped bootstraps and the minimal one, over HTTP and gRPC. Every attack goes
through all four.

For each answer:
- no 5xx (the keys are loaded: ztauthz has no reason to fail closed here);
- no false allow: a 200 only where the oracle accepts one (every reading of the path the
  upstream received is a request the policies allow for the credential presented, and that
  credential is valid);
- an allowed request reaches the upstream with the path ztauthz was asked about, and with the
  identity headers ztauthz set (a client's own ``x-auth-*`` never gets through);
- every answer ztauthz gave has exactly one decision-log line that says the same, and the
  decisions counted in /metrics grow by exactly the number of lines written.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.dev.stack import Stack
from app.policy.normalize import normalize_path
from tests.fuzz.readings import distinct_readings
from tests.integration.attack_corpus import (
    CONTRACTOR_SUBJECT,
    FINANCE_SUBJECT,
    Attack,
    corpus,
    materialize,
)
from tests.integration.edge_support import Edge

pytestmark = pytest.mark.integration

CORPUS = corpus()
_PLACEHOLDER = re.compile(r"\{token:([a-z0-9-]+)\}")
SUBJECTS = {"finance": FINANCE_SUBJECT, "contractor": CONTRACTOR_SUBJECT}


@dataclass(frozen=True, slots=True)
class Answer:
    attack: Attack
    edge: str
    status: int
    body: Any  # parsed JSON, or None

    @property
    def decision_id(self) -> str | None:
        if not isinstance(self.body, dict):
            return None
        if "decision_id" in self.body:  # ztauthz's denial
            return str(self.body["decision_id"])
        upstream = self.body.get("headers")
        if isinstance(upstream, dict):  # the echo upstream: what ztauthz's allow added
            found = upstream.get("x-auth-decision-id")
            return None if found is None else str(found)
        return None


def send(edge: Edge, tokens: Mapping[str, str], attack: Attack) -> Answer:
    """One request, headers exactly as the attack lists them (repeats kept, Host overridable)."""
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        headers = [
            (name, _PLACEHOLDER.sub(lambda m: tokens[m.group(1)], value))
            for name, value in attack.headers
        ]
        has_host = any(name.lower() == "host" for name, _ in headers)
        conn.putrequest(attack.method, attack.path, skip_host=has_host, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value.encode("latin-1"))
        conn.endheaders()
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return Answer(attack, edge.name, response.status, body)


def decision_lines(stack: Stack) -> list[dict[str, Any]]:
    text = stack.log("ztauthz").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.split("\n") if line.startswith('{"kind":"decision"')]


def decisions_counted(stack: Stack) -> float:
    text = httpx.get(f"{stack.admin_url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ztauthz_decisions_total{")
    )


def problems_of(answer: Answer, lines: Mapping[str, dict[str, Any]]) -> list[str]:
    attack = answer.attack
    found = []
    if answer.status >= 500:
        found.append(f"{answer.status}")
    decision_id = answer.decision_id
    if decision_id is not None:
        line = lines.get(decision_id)
        if line is None:
            found.append("no decision-log line")
        elif line["status"] != answer.status and not (
            answer.status == 200 and line["status"] == 200
        ):
            found.append(f"logged {line['status']}, answered {answer.status}")
    if answer.status != 200:
        return found
    body = answer.body
    if attack.method == "HEAD" or not (isinstance(body, dict) and "raw_path" in body):
        # No echo to read what the upstream received: the path as sent must be acceptable.
        return found if attack.may_allow() else [*found, "FALSE ALLOW (no echo)"]
    received = str(body["raw_path"]) + (f"?{body['query']}" if body.get("query") else "")
    if not attack.may_allow(str(body["raw_path"])):
        found.append("FALSE ALLOW")
    line = lines.get(decision_id or "")
    if line is not None:
        if line["path"] != str(body["raw_path"]):
            found.append(f"asked about {line['path']!r}, upstream got {received!r}")
        elif distinct_readings(received) != {normalize_path(line["path"])}:
            found.append(f"upstream path {received!r} reads as another")
    upstream = body["headers"]
    expected_subject = SUBJECTS.get(attack.credential)
    if upstream.get("x-auth-subject") != expected_subject:
        found.append(f"upstream saw x-auth-subject {upstream.get('x-auth-subject')!r}")
    if attack.credential == "none" and "x-auth-groups" in upstream:
        found.append("a spoofed x-auth-groups reached the upstream")
    return found


def test_the_attack_corpus_finds_no_false_allow(edges: list[Edge]) -> None:
    assert 900 <= len(CORPUS) <= 1200, len(CORPUS)
    stacks = {id(edge.stack): edge.stack for edge in edges}
    tokens = {key: materialize(stack) for key, stack in stacks.items()}
    before_lines = {key: len(decision_lines(stack)) for key, stack in stacks.items()}
    before_counted = {key: decisions_counted(stack) for key, stack in stacks.items()}
    started = time.monotonic()

    def run(edge: Edge) -> list[Answer]:
        return [send(edge, tokens[id(edge.stack)], attack) for attack in CORPUS]

    with ThreadPoolExecutor(max_workers=len(edges)) as pool:
        answers = [answer for batch in pool.map(run, edges) for answer in batch]
    elapsed = time.monotonic() - started

    # Every line is written within the decision log's flush interval.
    wanted = {answer.decision_id for answer in answers if answer.decision_id}
    deadline = time.monotonic() + 10
    while True:
        lines = {key: decision_lines(stack)[before_lines[key] :] for key, stack in stacks.items()}
        by_id = {str(line["decision_id"]): line for batch in lines.values() for line in batch}
        if wanted <= set(by_id) or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    problems = Counter[str]()
    examples: dict[str, str] = {}
    for answer in answers:
        for problem in problems_of(answer, by_id):
            kind = f"{answer.edge}: {problem} [{answer.attack.name}]"
            problems[kind] += 1
            examples.setdefault(
                kind, f"{answer.attack} -> {answer.status} {str(answer.body)[:200]}"
            )
    assert not problems, "\n".join(
        f"{n}x {kind}\n   e.g. {examples[kind]}" for kind, n in problems.most_common(20)
    )

    for key, stack in stacks.items():
        ids = [str(line["decision_id"]) for line in lines[key]]
        assert len(ids) == len(set(ids)), "a decision logged twice"
        assert decisions_counted(stack) - before_counted[key] == len(ids), (
            "metrics and log disagree"
        )

    statuses = Counter(answer.status for answer in answers)
    allowed = sum(1 for answer in answers if answer.status == 200)
    print(
        f"\n{len(answers)} requests in {elapsed:.1f}s: {dict(sorted(statuses.items()))}, {allowed} allowed"
    )
    assert elapsed < 120
