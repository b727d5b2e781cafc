"""app/protos is exactly what ``make protos`` makes from the vendored .proto files, and lives
wholly in ztauthz's own namespace (issue 16: no file of another distribution's)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from app.protos.envoy.service.auth.v3 import external_auth_pb2

REPO = Path(__file__).resolve().parents[3]
GENERATED = REPO / "app" / "protos"
VENDORED = REPO / "third_party" / "protos"
GENERATOR = VENDORED / "generate.py"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_checked_in_code_equals_a_fresh_generation(tmp_path: Path) -> None:
    out = tmp_path / "protos"
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    fresh, checked_in = _tree(out), _tree(GENERATED)
    assert sorted(fresh) == sorted(checked_in), "run `make protos` and commit app/protos"
    changed = [name for name in fresh if fresh[name] != checked_in[name]]
    assert changed == [], "run `make protos` and commit app/protos"


def test_every_vendored_proto_is_used_and_licensed() -> None:
    sys.path.insert(0, str(VENDORED))
    try:
        import generate  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(VENDORED))
    needed = set(generate.closure())
    vendored = {
        str(p.relative_to(VENDORED / upstream))
        for upstream in generate.UPSTREAMS
        for p in (VENDORED / upstream).rglob("*.proto")
    }
    assert vendored == needed  # nothing stale, nothing missing
    readme = (VENDORED / "README.md").read_text(encoding="utf-8")
    for upstream in generate.UPSTREAMS:
        assert (VENDORED / upstream / "LICENSE").is_file()
        assert re.search(rf"`{upstream}/`.*\b[0-9a-f]{{40}}\b", readme), upstream


def test_generated_code_imports_only_its_own_namespace() -> None:
    foreign = re.compile(r"^(from|import) (envoy|xds|udpa|validate)\b", re.MULTILINE)
    for path in GENERATED.rglob("*.py*"):
        if path.suffix in (".py", ".pyi"):
            assert not foreign.search(path.read_text(encoding="utf-8")), path


def test_the_wire_names_are_envoys() -> None:
    """Only the Python module path moved: Envoy calls the same service and method names."""
    service = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"]
    assert service.full_name == "envoy.service.auth.v3.Authorization"
    assert service.methods_by_name["Check"].input_type.full_name == (
        "envoy.service.auth.v3.CheckRequest"
    )
    assert external_auth_pb2.DESCRIPTOR.name == "envoy/service/auth/v3/external_auth.proto"
    assert external_auth_pb2.CheckRequest.__module__ == (
        "app.protos.envoy.service.auth.v3.external_auth_pb2"
    )
