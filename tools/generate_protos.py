"""``make protos``: app/protos/envoy_ext_authz_pb2.py and .pyi from app/protos/envoy_ext_authz.proto.

The .proto is ztauthz's own (docs/packaging.md says why); this runs protoc from grpcio-tools
(pinned in the dev extra, so the output is the same byte for byte on every machine) with three
include roots: the repository (our file, named ``app/protos/envoy_ext_authz.proto`` so that the
generated module is ``app.protos.envoy_ext_authz_pb2``), the .proto files grpcio-tools ships
(``google/protobuf/struct.proto``) and those googleapis-common-protos ships beside its modules
(``google/rpc/status.proto``). Only messages are generated: the service path is Envoy's and
lives in app/transport/grpc.py. ``tests/unit/core/test_protos.py`` runs this with ``--out`` and
fails unless the checked-in output equals a fresh generation.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from google.rpc import status_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("app/protos/envoy_ext_authz.proto",)
# What protoc writes for each source (relative to --out), and nothing else.
OUTPUTS = tuple(
    name.removesuffix(".proto") + suffix for name in SOURCES for suffix in ("_pb2.py", "_pb2.pyi")
)


def include_roots() -> list[Path]:
    """The repository first, then the well-known types and googleapis-common-protos' files."""
    well_known = Path(str(resources.files("grpc_tools") / "_proto"))
    googleapis = Path(status_pb2.__file__).resolve().parents[2]  # .../google/rpc/status_pb2.py
    return [ROOT, well_known, googleapis]


def generate(out: Path) -> list[Path]:
    """Write the generated modules under ``out`` (the repository by default); return them."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        "protoc",
        *(f"--proto_path={root}" for root in include_roots()),
        f"--python_out={out}",
        f"--pyi_out={out}",
        *SOURCES,
    ]
    if protoc.main(argv) != 0:
        raise SystemExit(f"protoc failed: {' '.join(argv)}")
    return [out / name for name in OUTPUTS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT,
        help="directory to write app/protos/... under (default: the repository)",
    )
    args = parser.parse_args(argv)
    for path in generate(args.out.resolve()):
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
