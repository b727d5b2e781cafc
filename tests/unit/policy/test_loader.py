from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from app.policy.compile import path_pattern_problem
from app.policy.loader import check_policy_dir, load_policy_dir
from app.policy.problem import PolicyLoadError, Problem

GOOD = """\
apiVersion: ztauthz/v1
kind: Policy
metadata:
  name: {name}
spec:
  rules:
    - id: {rule}
      effect: allow
      anonymous: true
"""


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(root: Path) -> list[str]:
    return [str(p) for p in check_policy_dir(root)]


def one_rule(rule_body: str, *, spec_extra: str = "") -> str:
    """A policy with one rule whose body (indented under '- ') is given; rule id at line 7."""
    body = textwrap.indent(textwrap.dedent(rule_body).strip("\n"), "      ").lstrip()
    return (
        "apiVersion: ztauthz/v1\n"
        "kind: Policy\n"
        "metadata:\n"
        "  name: p\n"
        f"spec:\n{spec_extra}"
        "  rules:\n"
        f"    - {body}\n"
    )


def test_problem_str() -> None:
    assert str(Problem("a.yaml", 3, "bad")) == "a.yaml:3: bad"
    assert str(Problem("a.yaml", 3, "meh", "warning")) == "a.yaml:3: warning: meh"
    assert str(Problem("dir", 0, "not a directory")) == "dir: not a directory"


def test_not_a_directory(tmp_path: Path) -> None:
    file = write(tmp_path, "a.yaml", GOOD.format(name="a", rule="r"))
    assert problems_of(file) == [f"{file}: not a directory (expected a directory of policies)"]
    missing = tmp_path / "missing"
    assert problems_of(missing) == [
        f"{missing}: not a directory (expected a directory of policies)"
    ]


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"empty.yaml": ""},
        {"comments.yml": "# nothing here\n---\n"},
        {"notes.txt": GOOD.format(name="a", rule="r")},
        {".hidden.yaml": GOOD.format(name="a", rule="r")},
        {".git/x.yaml": GOOD.format(name="a", rule="r")},
    ],
)
def test_no_policy_documents(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    assert problems_of(tmp_path) == [f"{tmp_path}: no policy documents found (files .yaml, .yml)"]
    with pytest.raises(PolicyLoadError):
        load_policy_dir(tmp_path)


def test_loads_recursively_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", GOOD.format(name="b", rule="rb"))
    write(tmp_path, "a/z.yml", GOOD.format(name="az", rule="raz"))
    write(
        tmp_path,
        "a/m.yaml",
        GOOD.format(name="am1", rule="ram1") + "---\n" + GOOD.format(name="am2", rule="ram2"),
    )
    write(tmp_path, "..2024_01_01/b.yaml", GOOD.format(name="b", rule="rb"))  # ConfigMap copy
    compiled = load_policy_dir(tmp_path)
    assert compiled.policy_names == ("am1", "am2", "az", "b")
    assert [r.id for r in compiled.rules] == ["ram1", "ram2", "raz", "rb"]
    assert [r.order for r in compiled.rules] == [0, 1, 2, 3]
    assert compiled.rule_count == 4
    second = compiled.rules[1]
    assert (second.file, second.line) == (str(tmp_path / "a/m.yaml"), 17)


def test_version_is_content_hash(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, "x.yaml", GOOD.format(name="x", rule="r1"))
    write(a, "y.yaml", GOOD.format(name="y", rule="r2"))
    write(b, "y.yaml", GOOD.format(name="y", rule="r2"))
    write(b, "x.yaml", GOOD.format(name="x", rule="r1"))
    version = load_policy_dir(a).version
    assert version.startswith("sha256:") and len(version) == len("sha256:") + 16
    assert load_policy_dir(b).version == version  # same files, other creation order
    (b / "y.yaml").rename(b / "z.yaml")
    assert load_policy_dir(b).version != version  # a path is part of the content
    write(a, "x.yaml", GOOD.format(name="x", rule="r1") + "# comment\n")
    assert load_policy_dir(a).version != version


def test_load_error_carries_only_errors(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "apiVersion: [\n")
    with pytest.raises(PolicyLoadError) as caught:
        load_policy_dir(tmp_path)
    assert [p.severity for p in caught.value.problems] == ["error"]
    assert str(caught.value) == str(caught.value.problems[0])


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "apiVersion: ztauthz/v1\nkind: Policy\nmetadata: {name: [\n")
    (problem,) = check_policy_dir(tmp_path)
    assert (problem.file, problem.line) == (str(path), 4)
    assert problem.message.startswith("invalid YAML")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", GOOD.format(name="a", rule="r") + "kind: Policy\n")
    assert problems_of(tmp_path) == [f"{path}:10: duplicate key 'kind'"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_bytes(b"apiVersion: \xff\n")
    assert problems_of(tmp_path) == [f"{path}:1: not valid UTF-8"]


def test_document_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", GOOD.format(name="a", rule="r") + "---\n- just\n- a list\n")
    assert problems_of(tmp_path) == [
        f"{path}:11: a policy document must be a mapping with apiVersion, kind, metadata and spec"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.format(name="a", rule="r").replace("ztauthz/v1", "ztauthz/v2"),
            "1: apiVersion: unsupported apiVersion 'ztauthz/v2'; expected 'ztauthz/v1'",
        ),
        (
            GOOD.format(name="a", rule="r").replace("kind: Policy", "kind: Config"),
            "2: kind: unsupported kind 'Config'; expected 'Policy' or 'Grant'",
        ),
        (
            GOOD.format(name="a", rule="r").replace("kind: Policy\n", ""),
            "1: missing required key 'kind'",
        ),
        (
            GOOD.format(name="a", rule="r").replace("  name: a\n", "  name: a\n  labels: {}\n"),
            "5: metadata.labels: unknown key; expected one of: name",
        ),
        (
            GOOD.format(name="Payments", rule="r"),
            "4: metadata.name: 'Payments' is invalid: "
            "expected lower-case letters, digits and '-' only",
        ),
        (
            GOOD.format(name="a", rule="r").replace("metadata:\n  name: a\n", "metadata: {}\n"),
            "3: metadata: missing required key 'name'",
        ),
        (
            GOOD.format(name="a", rule="r").replace("spec:\n", "spec:\n  hosts: []\n"),
            "6: spec.hosts: must not be empty",
        ),
        (
            GOOD.format(name="a", rule="r").replace(
                "spec:\n", "spec:\n  hosts:\n    - ok.example.com\n    - a.example.com:8443\n"
            ),
            "8: spec.hosts[1]: 'a.example.com:8443' is invalid: expected a hostname such as "
            "api.example.com or a wildcard such as *.example.com (no port, no scheme, '*' only "
            "as the whole first label)",
        ),
        (
            GOOD.format(name="a", rule="r").replace("spec:\n", "spec:\n  hosts: ['a*.b.com']\n"),
            "6: spec.hosts[0]: 'a*.b.com' is invalid: expected a hostname such as "
            "api.example.com or a wildcard such as *.example.com (no port, no scheme, '*' only "
            "as the whole first label)",
        ),
        (
            GOOD.format(name="a", rule="r").replace("spec:\n", "spec:\n  hosts: x.com\n"),
            "6: spec.hosts: expected a list, got a string",
        ),
        (
            "apiVersion: ztauthz/v1\nkind: Policy\nmetadata: {name: a}\nspec:\n  rules: []\n",
            "5: spec.rules: must not be empty",
        ),
        (
            one_rule("id: r\nanonymous: true"),
            "7: spec.rules[0]: missing required key 'effect'",
        ),
        (
            one_rule("id: r\neffect: allow\nefect: allow"),
            "9: spec.rules[0].efect: unknown key; "
            "expected one of: id, effect, anonymous, match, subject, when, time_window, grant, "
            "sender_constrained, auth, device, location, workload, high_risk",
        ),
        (
            one_rule("id: r\neffect: permit"),
            "8: spec.rules[0].effect: 'permit' is not one of: allow, deny",
        ),
        (
            one_rule("id: r\neffect: allow\nanonymous: 'yes'"),
            "9: spec.rules[0].anonymous: expected true or false, got a string",
        ),
        (
            one_rule("id: r\neffect: allow\nmatch:\n  methods: [GET, get]"),
            "10: spec.rules[0].match.methods[1]: 'get' is not one of: GET, POST, PUT, PATCH, "
            "DELETE, HEAD, OPTIONS, CONNECT, TRACE (write it upper-case: GET)",
        ),
        (
            one_rule("id: r\neffect: allow\nmatch:\n  methods: [FETCH]"),
            "10: spec.rules[0].match.methods[0]: 'FETCH' is not one of: GET, POST, PUT, PATCH, "
            "DELETE, HEAD, OPTIONS, CONNECT, TRACE",
        ),
        (
            one_rule("id: r\neffect: allow\nmatch:\n  methods: [GET, GET]"),
            "10: spec.rules[0].match.methods: must not contain duplicates",
        ),
        (
            one_rule("id: r\neffect: allow\nmatch:\n  paths: [invoices]"),
            "10: spec.rules[0].match.paths[0]: 'invoices' is invalid: "
            "a path pattern must start with '/'",
        ),
        (
            one_rule("id: r\neffect: allow\nsubject: {}"),
            "9: spec.rules[0].subject: must not be empty",
        ),
        (
            one_rule("id: r\neffect: allow\nsubject:\n  groups_any: []"),
            "10: spec.rules[0].subject.groups_any: must not be empty",
        ),
        (
            one_rule("id: r\neffect: allow\nsubject:\n  group_any: [a]"),
            "10: spec.rules[0].subject.group_any: unknown key; expected one of: issuers_any, "
            "subjects_any, groups_any, groups_all, scopes_any, scopes_all, claims",
        ),
        (
            one_rule("id: r\neffect: allow\nsubject:\n  claims:\n    tenant: {a: 1}"),
            "11: spec.rules[0].subject.claims.tenant: "
            "expected a string or a number or true or false or a list, got a mapping",
        ),
        (
            one_rule("id: r\neffect: allow\nsubject:\n  claims:\n    tenant: [[a]]"),
            "11: spec.rules[0].subject.claims.tenant[0]: "
            "expected a string or a number or true or false, got a list",
        ),
        (
            one_rule("id: r\neffect: allow\nsubject:\n  claims:\n    tenant: 2024-01-01"),
            "11: spec.rules[0].subject.claims.tenant: "
            "expected a string or a number or true or false or a list, got a YAML date",
        ),
        (
            one_rule("id: r\neffect: allow\nsubject:\n  claims:\n    a..b: x"),
            "10: spec.rules[0].subject.claims: 'a..b' is invalid: "
            "expected a claim name or a dotted path without empty parts",
        ),
    ],
)
def test_schema_problems_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "p.yaml", text)
    assert problems_of(tmp_path) == [f"{path}:{expected}"]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("/invoices/", "remove the trailing '/': write '/invoices' "),
        ("/a//b", "empty segments ('//') are not allowed"),
        ("/a/./b", "'.' and '..' segments are not allowed"),
        ("/a/..", "'.' and '..' segments are not allowed"),
        ("/**/a", "'**' is only allowed as the last segment"),
        ("/a/**/**", "'**' is only allowed as the last segment"),
        ("/inv*", "'*' must be a whole segment"),
        ("/a/b**", "'*' must be a whole segment"),
        ("/a/***", "'*' must be a whole segment"),
        ("/a%20b", "'%' and '?' are not allowed"),
        ("/a?b=1", "'%' and '?' are not allowed"),
        ("/a\\b", "backslashes and control characters are not allowed"),
        ("/a\tb", "backslashes and control characters are not allowed"),
    ],
)
def test_bad_path_patterns(tmp_path: Path, pattern: str, message: str) -> None:
    quoted = pattern.replace("\\", "\\\\").replace("\t", "\\t")
    text = one_rule(f'id: r\neffect: allow\nmatch:\n  paths:\n    - /ok\n    - "{quoted}"')
    path = write(tmp_path, "p.yaml", text)
    (problem,) = check_policy_dir(tmp_path)
    assert (problem.file, problem.line) == (str(path), 12)
    assert problem.message.startswith(f"spec.rules[0].match.paths[1]: {message}")


@pytest.mark.parametrize("pattern", ["/", "/a", "/a/*", "/*/b", "/a/**", "/**", "/*/*/**", "/é"])
def test_good_path_patterns(pattern: str) -> None:
    assert path_pattern_problem(pattern) is None


def test_anonymous_on_deny_rule(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", one_rule("id: r\neffect: deny\nanonymous: true"))
    assert problems_of(tmp_path) == [
        f"{path}:9: spec.rules[0].anonymous: only allow rules can be anonymous; "
        "a deny rule without subject already applies to everyone"
    ]


def test_anonymous_false_on_deny_rule_is_fine(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", one_rule("id: r\neffect: deny\nanonymous: false"))
    assert problems_of(tmp_path) == []


def test_anonymous_with_subject(tmp_path: Path) -> None:
    text = one_rule("id: r\neffect: allow\nanonymous: true\nsubject: {groups_any: [a]}")
    path = write(tmp_path, "p.yaml", text)
    assert problems_of(tmp_path) == [
        f"{path}:9: spec.rules[0].anonymous: an anonymous rule needs no token, so it cannot "
        "have subject conditions; remove anonymous or subject"
    ]


def test_duplicate_policy_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", GOOD.format(name="same", rule="r1"))
    second = write(tmp_path, "b/c.yaml", GOOD.format(name="same", rule="r2"))
    assert problems_of(tmp_path) == [
        f"{second}:4: metadata.name: duplicate policy name 'same': also defined at {first}:4"
    ]


def test_duplicate_rule_ids_name_both_places(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", GOOD.format(name="a", rule="dup"))
    text = GOOD.format(name="b", rule="ok") + "    - id: dup\n      effect: deny\n"
    second = write(tmp_path, "b.yaml", text)
    assert problems_of(tmp_path) == [
        f"{second}:10: spec.rules[1].id: duplicate rule id 'dup': also defined at {first}:7"
    ]


def test_every_problem_is_reported_sorted_by_file_and_line(tmp_path: Path) -> None:
    b = write(
        tmp_path,
        "b.yaml",
        one_rule("id: r\neffect: deny\nanonymous: true\nmatch:\n  paths: [/x/, /y/**/z]"),
    )
    a = write(tmp_path, "a.yaml", "kind: Policy\n---\n" + GOOD.format(name="a", rule="ra"))
    problems = check_policy_dir(tmp_path)
    assert [(p.file, p.line) for p in problems] == [
        (str(a), 1),
        (str(a), 1),
        (str(a), 1),
        (str(b), 9),
        (str(b), 11),
        (str(b), 11),
    ]
    assert problems[0].message == "missing required key 'apiVersion'"
    assert {p.message for p in problems[:3]} == {
        "missing required key 'apiVersion'",
        "missing required key 'metadata'",
        "missing required key 'spec'",
    }
    assert problems[4].message.startswith("spec.rules[0].match.paths[0]: remove the trailing")
    assert problems[5].message.startswith("spec.rules[0].match.paths[1]: '**' is only")


def test_host_entries_are_normalized(tmp_path: Path) -> None:
    text = GOOD.format(name="a", rule="r").replace(
        "spec:\n", "spec:\n  hosts: [API.Example.com, '*.Apps.Example.com']\n"
    )
    write(tmp_path, "p.yaml", text)
    (rule,) = load_policy_dir(tmp_path).rules
    assert rule.hosts == ("api.example.com", "*.apps.example.com")


def test_shipped_policies_pass() -> None:
    shipped = Path(__file__).resolve().parents[3] / "policies"
    assert check_policy_dir(shipped) == []
    compiled = load_policy_dir(shipped)
    assert compiled.rule_count >= 5
    assert "demo" in compiled.policy_names
