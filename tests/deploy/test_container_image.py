"""The Dockerfile (structure: no Docker engine here to build it), its hashed lock, its
.dockerignore, and its HEALTHCHECK command run for real against an HTTP server."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app.settings import AdminListener
from tests.deploy.deploy_support import COMPOSE, K8S, REPO

DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements.lock"


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[str]:
        return [i.arguments for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> list[Stage]:
    """Dockerfile instructions by stage (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    current: list[Instruction] = []
    header: tuple[str, str | None] | None = None
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            if header is not None:
                stages.append(Stage(header[0], header[1], tuple(current)))
            parts = arguments.split()
            header = (parts[0], parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None)
            current = []
        elif header is not None:
            current.append(Instruction(keyword, arguments.strip()))
    assert header is not None
    stages.append(Stage(header[0], header[1], tuple(current)))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


def test_multi_stage_with_a_runtime_stage_last(stages: list[Stage]) -> None:
    assert [s.name for s in stages] == ["build", "runtime"]
    runtime = stages[-1]
    copies = runtime.all("COPY")
    assert copies == ["--from=build /opt/ztauthz /opt/ztauthz"]


COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|cc|make|build-essential|python3?-dev|rustc|cargo)\b")


def test_runtime_stage_installs_no_compilers_or_packages(stages: list[Stage]) -> None:
    runtime = stages[-1]
    for command in runtime.all("RUN"):
        assert "apt-get install" not in command and "apk add" not in command, command
        assert "pip install" not in command, command
        assert not COMPILERS.search(command), command
    assert "pip uninstall" in " ".join(runtime.all("RUN"))  # and pip itself is gone
    assert re.search(r"slim|distroless", runtime.base + " ".join(_args(DOCKERFILE.read_text())))


def _args(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ARG ")]


def test_dependencies_come_only_from_the_hashed_lock(stages: list[Stage]) -> None:
    build = stages[0]
    installs = [r for r in build.all("RUN") if " install " in r]
    # The whole lock, once: no distribution in it overwrites another's files (issue 16), so no
    # reinstall afterwards.
    assert len(installs) == 1
    for flag in ("--require-hashes", "--only-binary=:all:", "--no-deps"):
        assert flag in installs[0], flag
    assert "-r /tmp/requirements.lock" in installs[0]
    assert "--force-reinstall" not in installs[0]
    assert "requirements.lock /tmp/requirements.lock" in build.all("COPY")


def test_runs_as_a_fixed_non_root_uid_that_the_manifests_name(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert runtime.all("USER") == ["65532:65532"]
    uids = set()
    for path in [*K8S.rglob("deployment.yaml")]:
        for doc in yaml.safe_load_all(path.read_text()):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                if c["image"] == "ztauthz":
                    uids.add(c["securityContext"]["runAsUser"])
    injector = yaml.safe_load((K8S / "injector" / "base" / "injector.yaml").read_text())
    uids.add(injector["ztauthz"]["run_as_user"])
    assert uids == {65532}


def _arg_defaults(stage: Stage) -> dict[str, str]:
    return dict(a.partition("=")[::2] for a in stage.all("ARG") if "=" in a)


def test_oci_labels(stages: list[Stage]) -> None:
    """OCI image-spec pre-defined annotation keys; version and licence are pyproject.toml's."""
    runtime = stages[-1]
    labels = " ".join(runtime.all("LABEL"))
    found = dict(re.findall(r'(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"', labels))
    for key in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert f"org.opencontainers.image.{key}" in found, key
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    defaults = _arg_defaults(runtime)
    assert found["org.opencontainers.image.version"] == "${VERSION}"
    assert defaults["VERSION"] == project["version"]
    assert found["org.opencontainers.image.licenses"] == project["license"]
    assert found["org.opencontainers.image.description"] == project["description"]
    for key, arg in (("revision", "REVISION"), ("created", "CREATED"), ("source", "SOURCE")):
        assert found[f"org.opencontainers.image.{key}"] == f"${{{arg}}}"
        assert arg in defaults, arg  # passed by the build command, "unknown" otherwise
    # The base the image was really built from, whatever PYTHON_IMAGE says.
    assert found["org.opencontainers.image.base.name"] == "${PYTHON_IMAGE}"
    assert "PYTHON_IMAGE" in runtime.all("ARG")


def test_no_parser_directive_that_needs_a_registry() -> None:
    """``# syntax=...`` makes BuildKit (the default builder of Docker 23+ and of ``docker compose
    build``) pull a frontend image before the first step: without a registry, nothing builds.
    The Dockerfile uses nothing the built-in frontend lacks."""
    for dockerfile in (DOCKERFILE, COMPOSE / "oidc" / "Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if not line.startswith("#"):
                break  # parser directives come before anything else
            directive = line.lstrip("# ").split("=")[0].strip().lower()
            assert directive not in ("syntax", "check"), f"{dockerfile}: {line}"


def test_entrypoint_and_default_command(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert json.loads(runtime.all("ENTRYPOINT")[0]) == ["python", "-m", "app.cli"]
    command = json.loads(runtime.all("CMD")[0])
    assert command == ["serve", "--config", "/etc/ztauthz/config/config.yaml"]
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["ztauthz"]["volumes"])
    assert command[-1] in mounts.values()


def test_nothing_secret_or_configurable_is_baked_in(stages: list[Stage]) -> None:
    for stage in stages:
        for instruction in stage.instructions:
            if instruction.keyword in ("ENV", "ARG"):
                assert not re.search(
                    r"(SECRET|PASSWORD|TOKEN|PRIVATE|_KEY)\b", instruction.arguments, re.I
                ), instruction
            if instruction.keyword == "COPY" and "--from" not in instruction.arguments:
                sources = instruction.arguments.split()[:-1]
                assert set(sources) <= {"app", "requirements.lock"}, instruction


def test_dockerignore_sends_only_code_and_lock() -> None:
    patterns = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    assert [p for p in patterns if p.startswith("!")] == ["!app/", "!requirements.lock"]


# --- the lock ----------------------------------------------------------------------------------


def _lock() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from a pip-compile --generate-hashes file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n\s*", " ", LOCK.read_text())
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line)
        assert match, f"not a pinned, hashed requirement: {line}"
        hashes = re.findall(r"sha256:([0-9a-f]{64})", match.group(3))
        entries[canonicalize_name(match.group(1))] = (match.group(2), hashes)
    return entries


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    lock = _lock()
    assert all(hashes for _, hashes in lock.values())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} is not in requirements.lock: regenerate it"
        assert requirement.specifier.contains(lock[name][0]), (name, lock[name][0])
    dev = {canonicalize_name(Requirement(s).name) for s in project["optional-dependencies"]["dev"]}
    assert not dev & set(lock), "development tools do not belong in the image"
    assert re.search(r"pip-compile .*--generate-hashes", LOCK.read_text())


# --- HEALTHCHECK -------------------------------------------------------------------------------


class _Admin(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def admin_server() -> Iterator[tuple[type[_Admin], int]]:
    handler = type("Admin", (_Admin,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _healthcheck(stages: list[Stage], port: int) -> int:
    line = stages[-1].all("HEALTHCHECK")[0]
    command = json.loads(line[line.index("CMD ") + 4 :])
    assert command[:2] == ["python", "-c"]
    env = {**os.environ, "ZTAUTHZ_SERVER__ADMIN__PORT": str(port)}
    result = subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    return result.returncode


def test_healthcheck_probes_the_admin_listener(
    stages: list[Stage], admin_server: tuple[type[_Admin], int]
) -> None:
    handler, port = admin_server
    assert _healthcheck(stages, port) == 0
    handler.status = 503
    assert _healthcheck(stages, port) != 0


def test_healthcheck_fails_when_nothing_listens(stages: list[Stage]) -> None:
    from app.dev.ports import free_port

    assert _healthcheck(stages, free_port()) != 0


def test_healthcheck_default_port_is_the_admin_default(stages: list[Stage]) -> None:
    line = stages[-1].all("HEALTHCHECK")[0]
    assert f"'ZTAUTHZ_SERVER__ADMIN__PORT', '{AdminListener().port}'" in line
    assert "--interval=" in line and "--timeout=" in line
