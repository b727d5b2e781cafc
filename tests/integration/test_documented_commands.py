"""The docs' shell commands run as written against a real local stack (``make demo``'s:
issuers, upstream, plain and mTLS Envoy, ``ztauthz serve``) and print what the docs show.

Blocks and their rules: tests/unit/docs/commands.py. The commands run in a directory that looks
like the repository root (every top-level entry linked in) whose ``.dev/`` is the test stack's
work directory, so ``.dev/keys``, ``.dev/pki/...``, ``policies`` and ``docs/examples/...`` mean
what they mean after ``make demo``. Two things differ from a developer's shell, both explicit:
the stack listens on free ports (the default ones may be taken on a shared machine), so the
default addresses in a command are replaced by the stack's (see ``ADDRESSES``); and the
``ALICE_TOKEN`` and ``CAROL_TOKEN`` variables ``make demo`` prints are set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.dev.demo_requests import demo_requests
from app.dev.procs import ProcessGroup
from app.dev.stack import Stack, start_stack
from app.dev.stack_config import Ports
from app.dev.state import ENV as DEV_DIR_ENV
from tests.unit.docs.commands import ShellBlock, missing_lines, shell_blocks
from tests.unit.docs.docs_support import ROOT

pytestmark = pytest.mark.integration

BLOCKS = [block for block in shell_blocks() if block.not_run is None]
TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Shell:
    cwd: Path
    env: dict[str, str]
    addresses: dict[str, str]

    def script(self, text: str) -> str:
        for default, actual in self.addresses.items():
            text = text.replace(default, actual)
        return text


def addresses(ports: Ports) -> dict[str, str]:
    """The default address of each stack process (as the docs write them) -> the test stack's."""
    defaults = Ports()
    found: dict[str, str] = {}
    for name in ("envoy", "envoy_mtls", "check", "admin", "issuer", "device_issuer", "upstream"):
        default, actual = getattr(defaults, name), getattr(ports, name)
        for host in ("127.0.0.1", "localhost"):
            found[f"{host}:{default}"] = f"127.0.0.1:{actual}"
    return found


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory, child_env: dict[str, str]) -> Iterator[Shell]:
    view = tmp_path_factory.mktemp("repo")
    for entry in ROOT.iterdir():
        if entry.name not in {".dev", ".git"}:
            (view / entry.name).symlink_to(entry)
    ports = Ports.ephemeral().resolved()
    with ProcessGroup() as group:
        stack: Stack = start_stack(
            group,
            workdir=view / ".dev",
            ports=ports,
            env=child_env,
            mtls=True,
            device_issuer=True,
        )
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **child_env,
            "PATH": os.pathsep.join([bin_dir, child_env.get("PATH", os.defpath)]),
            # The dev state directory a reader's checkout has (app/dev/state.py): this view's.
            DEV_DIR_ENV: str(view / ".dev"),
            **{r.name: r.token for r in demo_requests(stack) if r.token is not None},
        }
        yield Shell(view, env, addresses(ports))


def run(shell: Shell, script: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, "-e", "-o", "pipefail", "-c", script],
        cwd=shell.cwd,
        env=shell.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_some_blocks_run() -> None:
    # The documented commands this module proves: if the docs lost them (or the parser broke),
    # nothing below would run.
    assert len(BLOCKS) >= 6, [b.where for b in BLOCKS]
    assert any(b.info == "console" for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_documented_block_runs(block: ShellBlock, shell: Shell) -> None:
    if block.info == "sh":
        result = run(shell, shell.script(block.body))
        assert result.returncode == 0, f"{block.where}\n{result.stdout}\n{result.stderr}"
        return
    commands = block.commands()
    assert commands, f"{block.where}: a console block without a `$ ` command"
    # One shell for the block: each command's output and status go to their own files.
    outputs = shell.cwd / ".dev" / "doc-commands"
    outputs.mkdir(exist_ok=True)
    lines = []
    for n, command in enumerate(commands):
        out, rc = outputs / f"{n}.out", outputs / f"{n}.rc"
        lines.append(
            f"{{ {shell.script(command.text)}\n}} > {out} 2>&1 && echo 0 > {rc} || echo $? > {rc}"
        )
    result = run(shell, "\n".join(lines))
    assert result.returncode == 0, f"{block.where}\n{result.stdout}\n{result.stderr}"
    for n, command in enumerate(commands):
        printed = (outputs / f"{n}.out").read_text(encoding="utf-8")
        status = int((outputs / f"{n}.rc").read_text(encoding="utf-8"))
        where = f"{block.where}: $ {command.text}"
        assert status in (0, 1), f"{where}\nexit {status}\n{printed}"
        missing = missing_lines(command.shown, printed)
        assert missing == [], f"{where}\nprinted:\n{printed}"
