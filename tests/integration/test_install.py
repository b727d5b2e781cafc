"""A plain ``pip install`` of the built wheel gives a working service (issue 16): no file of
one distribution overwritten by another, ``pip check`` clean, and ``ztauthz serve`` starting
with OTLP tracing, gRPC and a CEL policy, answering over HTTP and gRPC. Building leaves the
work tree as it was.

Slow-ish (a fresh venv): pip's cache makes it ~1 min; pins come from requirements.lock (as
constraints), so the same wheels are used as everywhere else."""

from __future__ import annotations

import collections
import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from app.protos import envoy_ext_authz_pb2 as pb
from app.transport.grpc import check_method

# Building the wheel and installing it into a fresh venv takes about a minute on two idle cores
# with pip's cache warm (make venv fills it), several on a loaded machine: far beyond the
# suite's per-test default.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
POLICY = """\
apiVersion: ztauthz/v1
kind: Policy
metadata: {name: install}
spec:
  rules:
    - id: public-get
      effect: allow
      anonymous: true
      match: {paths: [/public]}
      when: request.method == "GET"
"""


def _run(*argv: str | Path, cwd: Path = ROOT, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _untracked() -> set[str]:
    """Untracked and ignored paths, but bytecode: the other test worker's imports write
    ``__pycache__`` at any time, and no build leaves it."""
    out = _run("git", "status", "--porcelain", "--untracked-files=all", "--ignored")
    return {
        line
        for line in out.splitlines()
        if line.startswith(("??", "!!")) and "__pycache__/" not in line
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel and its dependencies, installed by plain pip."""
    tmp = tmp_path_factory.mktemp("install")
    before = _untracked()
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", tmp / "dist", ROOT)
    assert _untracked() == before  # no build/, no *.egg-info left in the work tree
    (wheel,) = (tmp / "dist").glob("ztauthz-*.whl")
    # The lock's pins without hashes, as constraints: the wheels the suite ran with, cached.
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
    pins = [line.split()[0] for line in lock if "==" in line and not line.startswith(" ")]
    (tmp / "constraints.txt").write_text("\n".join(pins) + "\n")
    _run(sys.executable, "-m", "venv", tmp / "venv")
    pip = tmp / "venv" / "bin" / "pip"
    _run(pip, "install", "--quiet", "-c", tmp / "constraints.txt", wheel)
    return tmp / "venv"


def test_pip_check_is_clean(installed: Path) -> None:
    out = _run(installed / "bin" / "pip", "check")
    assert "No broken requirements found." in out


def test_no_file_is_claimed_by_two_distributions(installed: Path) -> None:
    (site,) = (installed / "lib").glob("python3*/site-packages")
    owners: dict[str, list[str]] = collections.defaultdict(list)
    for record in site.glob("*.dist-info/RECORD"):
        for line in record.read_text(encoding="utf-8").splitlines():
            path = line.rsplit(",", 2)[0]
            owners[os.path.normpath(path)].append(record.parent.name)
    shared = {path: dists for path, dists in owners.items() if len(dists) > 1}
    assert shared == {}
    # ztauthz's Envoy messages are its own module; nothing claims the top-level envoy package.
    assert not (site / "envoy").exists()
    assert (site / "app" / "protos" / "envoy_ext_authz_pb2.py").is_file()


def test_serve_starts_with_tracing_grpc_and_cel_and_answers(
    installed: Path, tmp_path: Path
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "install.yaml").write_text(POLICY)
    check, admin, rpc, collector = (_free_port() for _ in range(4))
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server:\n"
        f"  check: {{host: 127.0.0.1, port: {check}}}\n"
        f"  admin: {{host: 127.0.0.1, port: {admin}}}\n"
        f"  grpc: {{enabled: true, host: 127.0.0.1, port: {rpc}}}\n"
        "issuers:\n"
        "  - {issuer: 'http://127.0.0.1:9', audiences: [x], jwks_uri: 'http://127.0.0.1:9/j'}\n"
        f"policies: {tmp_path / 'policies'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZTAUTHZ_", "OTEL_"))}
    env |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector}",
        "OTEL_SERVICE_NAME": "ztauthz-install-test",
    }
    serve = subprocess.Popen(
        [installed / "bin" / "ztauthz", "serve", "--config", config],
        cwd=tmp_path,  # not the repository: only the installed package can be imported
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert serve.poll() is None, serve.communicate()[1]
            assert time.monotonic() < deadline
            try:
                socket.create_connection(("127.0.0.1", check), timeout=1).close()
                socket.create_connection(("127.0.0.1", rpc), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        connection = http.client.HTTPConnection("127.0.0.1", check, timeout=10)
        connection.request("GET", "/check/public", headers={"Host": "api.example.com"})
        reply = connection.getresponse()
        reply.read()
        connection.close()
        assert reply.status == 200  # the CEL condition held
        request = pb.CheckRequest()
        http_request = request.attributes.request.http
        http_request.method, http_request.host, http_request.path = (
            "POST",
            "api.example.com",
            "/public",
        )
        with grpc.insecure_channel(f"127.0.0.1:{rpc}") as channel:
            answer = check_method(channel)(request, timeout=10)
        assert answer.status.code != 0  # POST: the CEL condition fails, so no rule allows it
        assert answer.denied_response.status.code in (401, 403)
    finally:
        serve.terminate()
        _, stderr = serve.communicate(timeout=30)
    assert "Traceback" not in stderr and "ImportError" not in stderr, stderr
