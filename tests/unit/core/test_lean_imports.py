"""A worker loads no command-line tool it never runs: the CEL package's REPL (typer,
prompt_toolkit) and httpx's client (rich, pygments) cost ~11 MiB resident in each worker.
(click stays: uvicorn needs it.) Checked in a fresh interpreter, as ``ztauthz serve`` imports."""

from __future__ import annotations

import json
import subprocess
import sys

UNWANTED = ("typer", "prompt_toolkit", "rich", "pygments", "cel.cli", "httpx._main")

PROBE = f"""
import json, sys
import app.cli, app.main
from app.policy.cel_engine import Context, cel_compile
program = cel_compile("request.method == 'GET'")
context = Context()
context.add_variable("request", {{"method": "GET"}})
import app.protos.envoy_ext_authz_pb2  # the gRPC types
import httpx
print(json.dumps({{
    "loaded": [m for m in {UNWANTED!r} if sys.modules.get(m) is not None],
    "cel": program.execute(context),
    "httpx": hasattr(httpx, "AsyncClient"),
}}))
"""


def test_serving_imports_no_command_line_tools() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"loaded": [], "cel": True, "httpx": True}
