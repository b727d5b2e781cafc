"""ztauthz declines jsonschema's rfc3987-syntax import (app/policy/schema.py): the policy
schema checks no format, and that module builds a Lark grammar on import (seconds on every
start). Both halves of that reasoning are held here."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from app.policy.schema import SCHEMA_PATH


def _schema_keywords(node: Any, key: str) -> Iterator[str]:
    """Where ``key`` is used as a keyword (not as a property name) in a JSON schema."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                yield "/"
            if name in ("properties", "patternProperties", "$defs", "definitions"):
                for child_name, child in value.items():
                    for where in _schema_keywords(child, key):
                        yield f"/{name}/{child_name}{where}"
            elif isinstance(value, (dict, list)):
                for where in _schema_keywords(value, key):
                    yield f"/{name}{where}"
    elif isinstance(node, list):
        for index, item in enumerate(node):
            for where in _schema_keywords(item, key):
                yield f"/{index}{where}"


def test_the_policy_schema_checks_no_format() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert list(_schema_keywords(schema, "format")) == []
    assert list(_schema_keywords({"properties": {"format": {}}}, "format")) == []  # a name
    assert list(_schema_keywords({"items": {"format": "iri"}}, "format")) == ["/items/"]


def test_serve_and_the_cli_never_import_the_iri_grammar() -> None:
    # In a fresh interpreter: the test process may have imported anything already. In an
    # environment without rfc3987-syntax this holds trivially; the dev environment has it
    # (cyclonedx-bom's validation extra).
    probe = (
        "import sys, app.cli, app.main, app.policy.compile, app.policy.loader\n"
        "print(sorted(m for m in ('lark', 'rfc3987_syntax') if sys.modules.get(m)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
