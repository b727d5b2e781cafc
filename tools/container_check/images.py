"""The images: the base and service images (real where a registry answers, local stand-ins
otherwise), the image built exactly as documented, what it must be, and its hardened run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from tools.container_check.engine import Engine, apt_install
from tools.container_check.shell import CheckFailed, http, run, say, wait_for

STANDIN_LABEL: Final = "org.ztauthz.standin"
UID: Final = "65532:65532"
CONTAINER_TMP: Final = "/tmp"  # noqa: S108 - the container's own /tmp (a tmpfs), not the host's
HARDENED_NAME: Final = "ztauthz-container-check"
NETWORK: Final = "ztauthz-container-check"
# What a runtime image must not contain (wheels only: nothing is compiled, at build or run time).
TOOLS_ABSENT: Final = ("gcc", "cc", "c++", "clang", "make", "pip", "pip3")


def project(repo: Path) -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    return data


def image_tag(repo: Path) -> str:
    """The tag the docs build: ``ztauthz:VERSION``."""
    return f"ztauthz:{project(repo)['version']}"


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def dockerfile_bases(text: str) -> list[str]:
    """The images a Dockerfile starts from: FROM lines, global ARG defaults applied, build
    stages and ``scratch`` left out."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    bases: list[str] = []
    seen_from = False
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not seen_from:
            name, _, default = rest.strip().partition("=")
            args[name.strip()] = default.strip().strip("\"'")
        elif keyword == "FROM":
            seen_from = True
            words = [w for w in rest.split() if not w.startswith("--")]
            image = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), words[0]
            )
            if image.lower() != "scratch" and image not in stages and image not in bases:
                bases.append(image)
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2])
    return bases


def needed_images(repo: Path, compose_config: dict[str, Any]) -> list[str]:
    """Every image the Dockerfiles start from and every compose service image not built here."""
    dockerfiles = [repo / "Dockerfile"]
    services: dict[str, Any] = compose_config.get("services", {})
    for service in services.values():
        build = service.get("build")
        if build:
            dockerfiles.append(Path(build["context"]) / build.get("dockerfile", "Dockerfile"))
    names: list[str] = []
    for dockerfile in dockerfiles:
        names += dockerfile_bases(dockerfile.resolve().read_text())
    names += [s["image"] for s in services.values() if "build" not in s and "image" in s]
    return list(dict.fromkeys(names))


def _labels(engine: Engine, image: str) -> dict[str, str] | None:
    result = run([engine.docker, "image", "inspect", image], check=False, quiet=True)
    if result.returncode != 0:
        return None
    labels: dict[str, str] = json.loads(result.stdout)[0]["Config"].get("Labels") or {}
    return labels


def debian_mirror() -> str | None:
    """The machine's main Debian archive (deb822 or one-line apt sources), for standin-images."""
    uris: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        uris += re.findall(r"^URIs:\s*(\S+)", path.read_text(errors="replace"), re.M)
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        if path.is_file():
            uris += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", path.read_text(), re.M)
    main = [u for u in uris if "debian" in u and "security" not in u]
    return main[0] if main else None


def standin_builder(repo: Path) -> Path | None:
    """shared/containers/standin-images: $STANDIN_IMAGES, else beside the checkout."""
    named = os.environ.get("STANDIN_IMAGES")
    for candidate in [named] if named else [str(repo.parent / "shared/containers/standin-images")]:
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def ensure_images(engine: Engine, repo: Path, names: list[str]) -> list[str]:
    """Each image present: kept as it is; else pulled; else a local stand-in is built."""
    kinds: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        labels = _labels(engine, name)
        if labels is not None:
            kinds[name] = "stand-in" if STANDIN_LABEL in labels else "present"
            continue
        pulled = run([engine.docker, "pull", name], check=False, timeout=900)
        if pulled.returncode == 0:
            kinds[name] = "pulled"
        else:
            say(f"  no registry answered for {name}")
            missing.append(name)
    if missing:
        builder = standin_builder(repo)
        if builder is None:
            raise CheckFailed(
                f"no registry answered for {', '.join(missing)} and no stand-in builder was "
                "found: set STANDIN_IMAGES to shared/containers/standin-images"
            )
        if shutil.which("debootstrap") is None:
            apt_install("debootstrap")
        mirror = os.environ.get("DEBIAN_MIRROR") or debian_mirror()
        env = {"DEBIAN_MIRROR": mirror} if mirror else {}
        run([str(builder), "-C", str(repo), *missing], env=env, timeout=3600, stream=True)
        for name in missing:
            if _labels(engine, name) is None:
                raise CheckFailed(f"{name}: still missing after {builder.name}")
            kinds[name] = "stand-in (built now)"
    for name in names:
        say(f"  {name}: {kinds[name]}")
    standins = [n for n in names if kinds[n].startswith("stand-in")]
    real = len(names) - len(standins)
    return [f"{real} real, {len(standins)} stand-in" + (" (no registry)" if standins else "")]


def git_revision(repo: Path) -> str:
    return run(["git", "rev-parse", "HEAD"], cwd=repo, quiet=True).stdout.strip()


def build_image(engine: Engine, repo: Path) -> list[str]:
    """docs/containers.md, "Build": the documented command (``--network host`` added only
    where the engine has no default bridge)."""
    tag = image_tag(repo)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    network = [] if engine.default_bridge else ["--network", "host"]
    run(
        [engine.docker, "build", *network, "-t", tag,
         "--build-arg", f"REVISION={git_revision(repo)}",
         "--build-arg", f"CREATED={created}", "."],
        cwd=repo, timeout=3600, stream=True,
    )  # fmt: skip
    size = json.loads(run([engine.docker, "image", "inspect", tag], quiet=True).stdout)[0]["Size"]
    return [f"{tag}, {size / 1e6:.0f} MB"]


def check_image(engine: Engine, repo: Path) -> list[str]:
    """What the image promises: labels, user, health check, ``--help``, no compilers or pip."""
    tag = image_tag(repo)
    config = json.loads(run([engine.docker, "image", "inspect", tag], quiet=True).stdout)[0]
    labels: dict[str, str] = config["Config"].get("Labels") or {}
    meta = project(repo)
    want = {
        "org.opencontainers.image.version": meta["version"],
        "org.opencontainers.image.licenses": meta["license"],
        "org.opencontainers.image.revision": git_revision(repo),
    }
    for key, value in want.items():
        if labels.get(key) != value:
            raise CheckFailed(f"label {key} is {labels.get(key)!r}, not {value!r}")
    if not labels.get("org.opencontainers.image.source"):
        raise CheckFailed("label org.opencontainers.image.source is missing")
    if config["Config"].get("User") != UID:
        raise CheckFailed(f"runs as {config['Config'].get('User')!r}, not {UID}")
    if not (config["Config"].get("Healthcheck") or {}).get("Test"):
        raise CheckFailed("no HEALTHCHECK")
    helped = run([engine.docker, "run", "--rm", tag, "--help"])
    if "usage: ztauthz" not in helped.stdout:
        raise CheckFailed(f"--help printed {helped.stdout[:200]!r}")
    probe = " ".join(f"command -v {t};" for t in TOOLS_ABSENT)
    probe += " python -c 'import pip' 2>/dev/null && echo 'python -m pip'; true"
    found = run([engine.docker, "run", "--rm", "--entrypoint", "/bin/sh", tag, "-c", probe])
    if found.stdout.strip():
        raise CheckFailed(f"build tools in the runtime image: {found.stdout.split()}")
    return ["OCI labels, user 65532, HEALTHCHECK, --help; no compiler, make or pip"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def user_network(engine: Engine) -> Iterator[list[str]]:
    """``--network NAME`` where plain ``docker run`` would have no network, else nothing."""
    if engine.default_bridge:
        yield []
        return
    run([engine.docker, "network", "rm", NETWORK], check=False, quiet=True)
    run([engine.docker, "network", "create", NETWORK], quiet=True)
    try:
        yield ["--network", NETWORK]
    finally:
        run([engine.docker, "network", "rm", NETWORK], check=False, quiet=True)


def hardened_run(engine: Engine, repo: Path, grace: float) -> list[str]:
    """docs/containers.md, "Run it hardened": read-only root, all capabilities dropped, no new
    privileges, UID 65532; it answers checks, turns healthy, and stops cleanly on SIGTERM."""
    tag = image_tag(repo)
    port = _free_port()
    compose = repo / "deploy" / "compose"
    run([engine.docker, "rm", "-f", HARDENED_NAME], check=False, quiet=True)
    with user_network(engine) as network:
        run(
            [engine.docker, "run", "-d", "--name", HARDENED_NAME, *network,
             "--read-only", "--tmpfs", CONTAINER_TMP, "--cap-drop", "ALL",
             "--security-opt", "no-new-privileges",
             "-p", f"127.0.0.1:{port}:9000", "-e", "ZTAUTHZ_SERVER__CHECK__HOST=0.0.0.0",
             "-v", f"{compose / 'ztauthz.yaml'}:/etc/ztauthz/config/config.yaml:ro",
             "-v", f"{compose / 'policies'}:/etc/ztauthz/policies:ro",
             tag],
        )  # fmt: skip
        try:
            return _probe_hardened(engine, port, grace)
        finally:
            logs = run([engine.docker, "logs", HARDENED_NAME], check=False, quiet=True)
            if "Traceback" in logs.stderr:
                say(logs.stderr[-3000:])
            run([engine.docker, "rm", "-f", HARDENED_NAME], check=False, quiet=True)


def _probe_hardened(engine: Engine, port: int, grace: float) -> list[str]:
    url = f"http://127.0.0.1:{port}/check/invoices"
    answer = wait_for("an answer on the check port", lambda: http("GET", url), 60)
    challenge = answer.headers.get("www-authenticate", "")
    if answer.status != 401 or not challenge.startswith('Bearer realm="ztauthz"'):
        raise CheckFailed(f"no token: {answer.status} {challenge!r}, not 401 with a challenge")
    if answer.json().get("reason") != "token_missing":
        raise CheckFailed(f"no token: {answer.body}")
    forged = http("GET", url, {"authorization": "Bearer eyJhbGciOiJub25lIn0.e30."})
    if forged.status != 401:
        raise CheckFailed(f"an unsigned token answered {forged.status}, not 401")

    def healthy() -> bool | None:
        state = run(
            [engine.docker, "inspect", "-f", "{{.State.Health.Status}}", HARDENED_NAME],
            quiet=True,
        ).stdout.strip()
        return True if state == "healthy" else None

    wait_for("HEALTHCHECK healthy", healthy, 60, every=1)
    inside = run(
        [engine.docker, "exec", HARDENED_NAME, "sh", "-c",
         "id -u; id -g; grep -E '^(CapEff|NoNewPrivs):' /proc/1/status; "
         "touch /opt/ztauthz/x 2>/dev/null && echo writable || echo read-only"],
        quiet=True,
    ).stdout.split()  # fmt: skip
    expected = ["65532", "65532", "CapEff:", "0000000000000000", "NoNewPrivs:", "1", "read-only"]
    if inside != expected:
        raise CheckFailed(f"inside the container: {inside}, expected {expected}")
    started = time.monotonic()
    run([engine.docker, "stop", "-t", "10", HARDENED_NAME], quiet=True, timeout=60)
    took = time.monotonic() - started
    code = run(
        [engine.docker, "inspect", "-f", "{{.State.ExitCode}}", HARDENED_NAME], quiet=True
    ).stdout.strip()
    if code != "0" or took > grace + 3:
        raise CheckFailed(f"docker stop: exit code {code} after {took:.1f} s (grace {grace:g} s)")
    return [
        "401 + Bearer challenge, healthy, uid 65532, no capabilities, read-only root",
        f"SIGTERM -> exit 0 in {took:.1f} s",
    ]
