"""Load a policy directory: YAML -> validated documents -> compiled, indexed rules.

Every ``*.yaml`` / ``*.yml`` file under the directory is read (recursively, sorted by relative
path; names starting with ``.`` are skipped, which also skips the ``..data`` copies in a mounted
Kubernetes ConfigMap; ``*_test.yaml`` files hold ``PolicyTest`` documents for
``ztauthz policy test`` and are not part of the policies). A file holds ``Policy`` and ``Grant``
documents. Each document is checked against ``policy.schema.json`` (schema.py) and then for what
a schema cannot say (compile.py). Every problem names its file and line; nothing is compiled
while any error remains.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from app.policy.compile import Compiler, LoadOptions
from app.policy.index import CompiledPolicies, compile_policies
from app.policy.problem import PolicyLoadError, Problem
from app.policy.schema import SCHEMA_PATH, policy_validator
from app.yamlsrc import YamlError, parse_documents

SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = ("_test.yaml", "_test.yml")


def check_policy_dir(path: Path, options: LoadOptions | None = None) -> list[Problem]:
    """Everything wrong with a policy directory, sorted by file and line."""
    problems, _ = _load(path, options or LoadOptions())
    return problems


def load_policy_dir(path: Path, options: LoadOptions | None = None) -> CompiledPolicies:
    """Compile a policy directory; raise ``PolicyLoadError`` if it has any error."""
    problems, compiled = _load(path, options or LoadOptions())
    if compiled is None or any(p.severity == "error" for p in problems):
        raise PolicyLoadError([p for p in problems if p.severity == "error"])
    return compiled


def compile_policy_dir(
    path: Path, options: LoadOptions | None = None
) -> tuple[list[Problem], CompiledPolicies | None]:
    """Problems (errors and warnings) and, when there is no error, the compiled policies."""
    return _load(path, options or LoadOptions())


def is_test_file(path: Path) -> bool:
    return path.name.endswith(TEST_SUFFIXES)


# --- reading files ---------------------------------------------------------------------------


def yaml_files(root: Path) -> list[Path]:
    """Every YAML file of a directory (tests included), sorted by relative path."""
    found = [
        path
        for path in root.rglob("*")
        if path.suffix in SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and path.is_file()
    ]
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def _policy_files(root: Path) -> list[Path]:
    return [path for path in yaml_files(root) if not is_test_file(path)]


def _load(root: Path, options: LoadOptions) -> tuple[list[Problem], CompiledPolicies | None]:
    if not root.is_dir():
        return [Problem(str(root), 0, "not a directory (expected a directory of policies)")], None
    try:
        validator = policy_validator()
    except (OSError, ValueError) as exc:
        return [Problem(str(SCHEMA_PATH), 0, f"cannot read the policy schema: {exc}")], None
    compiler = Compiler(validator, options)
    digest = hashlib.sha256()
    for path in _policy_files(root):
        relative = path.relative_to(root).as_posix()
        try:
            content = path.read_bytes()
        except OSError as exc:
            compiler.error(str(path), 0, f"cannot read: {exc.strerror}")
            continue
        for part in (relative.encode("utf-8"), content):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        try:
            documents = parse_documents(content.decode("utf-8"), str(path))
        except UnicodeDecodeError:
            compiler.error(str(path), 1, "not valid UTF-8")
            continue
        except YamlError as exc:
            compiler.error(exc.file, exc.line, exc.message)
            continue
        for document in documents:
            compiler.add(document)
    if compiler.documents == 0 and not compiler.problems:
        compiler.error(str(root), 0, f"no policy documents found (files {', '.join(SUFFIXES)})")
    problems = sorted(dict.fromkeys(compiler.problems), key=lambda p: (p.file, p.line))
    if any(p.severity == "error" for p in problems):
        return problems, None
    version = "sha256:" + digest.hexdigest()[:16]
    return problems, compile_policies(version, compiler.rules, compiler.names, compiler.grants)
