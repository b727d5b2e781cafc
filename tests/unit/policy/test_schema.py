from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from app.http_facts import METHODS

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_FILE = ROOT / "policies" / "schema.json"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


def test_schema_is_a_valid_2020_12_schema(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith("https://")
    Draft202012Validator.check_schema(schema)


def _properties(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            yield f"{where}/properties/{name}", sub
        for key, sub in node.items():
            yield from _properties(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            yield from _properties(sub, f"{where}/{index}")


def test_every_property_is_described(schema: dict[str, Any]) -> None:
    properties = list(_properties(schema))
    assert len(properties) > 15
    undescribed = [where for where, sub in properties if not sub.get("description")]
    assert undescribed == []


def test_method_enum_matches_the_model(schema: dict[str, Any]) -> None:
    rule = schema["$defs"]["rule"]
    methods = rule["properties"]["match"]["properties"]["methods"]["items"]["enum"]
    assert set(methods) == METHODS


def _shipped_documents() -> list[Any]:
    docs: list[Any] = []
    for path in sorted((ROOT / "policies").rglob("*.y*ml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


def test_schema_accepts_the_shipped_policies(schema: dict[str, Any]) -> None:
    docs = _shipped_documents()
    assert docs
    validator = Draft202012Validator(schema)
    for doc in docs:
        assert [e.message for e in validator.iter_errors(doc)] == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("kind"),
        lambda d: d.update(apiVersion="ztauthz/v2"),
        lambda d: d["metadata"].update(name="Not_Valid"),
        lambda d: d["spec"].update(hosts=["example.com:443"]),
        lambda d: d["spec"]["rules"][0].update(effect="permit"),
        lambda d: d["spec"]["rules"][0].update(extra=1),
        lambda d: d["spec"]["rules"][0].update(match={"methods": ["get"]}),
        lambda d: d["spec"]["rules"][0].update(subject={}),
        lambda d: d["spec"]["rules"][0].update(subject={"claims": {"a": None}}),
    ],
)
def test_schema_rejects(schema: dict[str, Any], mutate: Any) -> None:
    doc = _shipped_documents()[0]
    mutate(doc)
    assert list(Draft202012Validator(schema).iter_errors(doc))
