"""Policy documents against ``policy.schema.json``: the validator, and its errors phrased for
people, each at the file and line of the key it is about; how document values (YAML
timestamps) are read. What a schema cannot say is checked when compiling (compile.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from app.policy.problem import Problem
from app.yamlsrc import Located, PathKey, key_path

# jsonschema imports rfc3987-syntax whenever it is installed (jsonschema's format-nongpl
# extra, which tools such as cyclonedx bring into the same environment), and that module
# builds a Lark grammar as it is imported: 2-3 s more for every ``ztauthz serve`` and every
# CLI command. It serves only the "iri" formats, and the policy schema uses no "format"
# keyword (tests/unit/policy/test_schema_import.py holds both to that). So the import is
# declined here, before jsonschema's: None in sys.modules makes it raise ImportError, which
# jsonschema expects of a missing extra. A process that imported it already keeps it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

from jsonschema import Draft202012Validator as Draft202012Validator  # noqa: E402 - after that
from jsonschema import ValidationError  # noqa: E402

# Shipped inside the package (so installed wheels have it); policies/schema.json links to it
# for editors.
SCHEMA_PATH = Path(__file__).resolve().parent / "policy.schema.json"
API_VERSION = "ztauthz/v1"
KIND = "Policy"
GRANT_KIND = "Grant"
TEST_KIND = "PolicyTest"


@cache
def policy_validator() -> Draft202012Validator:
    """The schema's validator (read and checked once)."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def at_key(path: PathKey, text: str) -> str:
    """``text`` about the key at ``path``, prefixed with that path."""
    return f"{key_path(path)}: {text}" if path else text


def shown(value: Any) -> str:
    """A value quoted in a message, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "nothing",
}


def _kind_of(value: Any) -> str:
    if value is None:
        return "an empty value"
    for kind, word in (
        (bool, "a boolean"),
        (int | float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (Mapping, "a mapping"),
    ):
        if isinstance(value, kind):
            return word
    return f"a YAML {type(value).__name__}"


def _explain(error: ValidationError) -> Iterator[tuple[PathKey, str]]:
    """Readable (location, message) pairs for one schema error."""
    path: PathKey = tuple(error.absolute_path)
    keyword, value = error.validator, error.instance
    expected: Any = error.validator_value
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if keyword == "additionalProperties" and isinstance(value, Mapping):
        allowed = list(schema.get("properties", {}))
        for key in value:
            if key not in allowed:
                where = (*path, key)
                yield where, at_key(where, f"unknown key; expected one of: {', '.join(allowed)}")
    elif keyword == "required" and isinstance(value, Mapping):
        for key in expected:
            if key not in value:
                yield path, at_key(path, f"missing required key {key!r}")
    elif keyword == "type":
        wanted = [expected] if isinstance(expected, str) else list(expected)
        words = " or ".join(_TYPE_WORDS.get(w, w) for w in wanted)
        yield path, at_key(path, f"expected {words}, got {_kind_of(value)}")
    elif keyword == "const":
        yield path, at_key(path, f"expected {expected!r}, got {shown(value)}")
    elif keyword == "enum":
        hint = ""
        if isinstance(value, str) and value.upper() in expected and value not in expected:
            hint = f" (write it upper-case: {value.upper()})"
        yield path, at_key(path, f"{shown(value)} is not one of: {', '.join(expected)}{hint}")
    elif keyword == "pattern":
        expectation = schema.get("patternErrorMessage", f"expected a match for {expected}")
        yield path, at_key(path, f"{shown(value)} is invalid: {expectation}")
    elif keyword in ("oneOf", "anyOf") and f"{keyword}ErrorMessage" in schema:
        yield path, at_key(path, schema[f"{keyword}ErrorMessage"])
    elif keyword in ("minItems", "minProperties", "minLength") and expected == 1:
        yield path, at_key(path, "must not be empty")
    elif keyword == "uniqueItems":
        yield path, at_key(path, "must not contain duplicates")
    elif keyword == "maxLength":
        yield path, at_key(path, f"too long: at most {expected} characters")
    else:
        yield path, at_key(path, error.message)


def as_timestamp(value: Any) -> float:
    """An RFC 3339 date-time with a zone offset -> epoch seconds; ``ValueError`` otherwise."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{shown(value)} is not a date and time such as 2026-11-26T09:00:00Z"
            ) from None
    else:
        raise ValueError("expected a date and time such as 2026-11-26T09:00:00Z")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{shown(str(value))} needs a zone offset (Z or +01:00)")
    return moment.timestamp()


def plain_data(value: Any) -> Any:
    """YAML timestamps (``2026-11-26T09:00:00Z`` unquoted) as the strings they were written
    as, so the schema sees text; everything else unchanged."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) for v in value]
    return value


def schema_errors(
    validator: Draft202012Validator, doc: Located, data: Mapping[str, Any]
) -> list[Problem]:
    """Readable schema problems of one document, each at its file and line."""
    return [
        Problem(doc.file, doc.line_of(path), message)
        for error in validator.iter_errors(data)
        for path, message in _explain(error)
    ]
