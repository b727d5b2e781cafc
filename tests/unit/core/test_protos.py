"""app/protos: ztauthz's own declaration of Envoy's ext_authz messages (issue 16).

The generated modules are exactly what ``make protos`` makes from app/protos/envoy_ext_authz.proto,
and they live wholly in ztauthz's namespaces (Python module and proto package), so nothing else in
the process (xds-protos, another copy of Envoy's API) can collide with them. That they are
wire-compatible with Envoy is tests/integration/test_grpc_envoy_wire.py's job.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from app.protos import envoy_ext_authz_pb2 as pb

REPO = Path(__file__).resolve().parents[3]
PROTOS = REPO / "app" / "protos"
GENERATOR = REPO / "tools" / "generate_protos.py"
GENERATED = ("app/protos/envoy_ext_authz_pb2.py", "app/protos/envoy_ext_authz_pb2.pyi")
WRITTEN_BY_HAND = ("app/protos/__init__.py", "app/protos/envoy_ext_authz.proto")


def _files(root: Path, under: Path) -> set[str]:
    """The files below ``under``, as paths relative to ``root``."""
    return {
        str(p.relative_to(root))
        for p in under.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_checked_in_code_equals_a_fresh_generation(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _files(tmp_path, tmp_path) == set(GENERATED)
    changed = [
        name for name in GENERATED if (tmp_path / name).read_bytes() != (REPO / name).read_bytes()
    ]
    assert changed == [], "run `make protos` and commit app/protos"
    # Nothing stale beside them.
    assert _files(REPO, PROTOS) == set(GENERATED) | set(WRITTEN_BY_HAND)


def test_the_messages_are_in_ztauthzs_own_proto_package() -> None:
    file = pb.DESCRIPTOR
    assert file.name == "app/protos/envoy_ext_authz.proto"
    assert file.package == "ztauthz.envoy.auth.v3"
    # Only distributions that own these files: protobuf and googleapis-common-protos.
    assert [d.name for d in file.dependencies] == [
        "google/protobuf/struct.proto",
        "google/rpc/status.proto",
    ]
    # No service: the method path is Envoy's, served by app/transport/grpc.py.
    assert not file.services_by_name
    names = [m.full_name for m in file.message_types_by_name.values()]
    assert "ztauthz.envoy.auth.v3.CheckRequest" in names
    assert all(name.startswith("ztauthz.envoy.auth.v3.") for name in names)
    assert pb.CheckRequest.__module__ == "app.protos.envoy_ext_authz_pb2"


def test_generated_code_imports_only_protobuf_and_googleapis() -> None:
    imports = re.compile(r"^(?:from|import) ([\w.]+)", re.MULTILINE)
    for name in GENERATED:
        found = set(imports.findall((REPO / name).read_text(encoding="utf-8")))
        foreign = {m for m in found if not m.startswith(("google.protobuf", "google.rpc"))}
        assert foreign <= {"collections.abc", "typing"}, (name, foreign)


# Another copy of Envoy's API in the same process (what xds-protos registers), reduced to the
# names that matter: envoy.service.auth.v3.CheckRequest in envoy/service/auth/v3/external_auth.proto.
COEXIST = """
from google.protobuf import descriptor_pb2, descriptor_pool
from app.protos import envoy_ext_authz_pb2 as pb
envoys = descriptor_pb2.FileDescriptorProto(
    name="envoy/service/auth/v3/external_auth.proto",
    package="envoy.service.auth.v3",
    syntax="proto3",
    message_type=[descriptor_pb2.DescriptorProto(name="CheckRequest")],
)
descriptor_pool.Default().Add(envoys)
pool = descriptor_pool.Default()
print(pool.FindMessageTypeByName("envoy.service.auth.v3.CheckRequest").full_name)
print(pool.FindMessageTypeByName("ztauthz.envoy.auth.v3.CheckRequest") is pb.CheckRequest.DESCRIPTOR)
"""


def test_envoys_own_names_can_be_registered_beside_ours() -> None:
    done = subprocess.run(
        [sys.executable, "-c", COEXIST],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["envoy.service.auth.v3.CheckRequest", "True"]
