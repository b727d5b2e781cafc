"""The CLI explains itself and fails cleanly (issue 16), checked through the real command:
help for every command and option, start-up errors as one line with exit 2, a closed stdout."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli import build_parser

ROOT = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "app.cli"]


def ztauthz(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ZTAUTHZ_", "OTEL_"))}
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**environ, **(env or {})},
        input=stdin,
    )


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = [path for path, _ in _commands(build_parser(with_dev=True))]


def test_every_command_and_option_is_described() -> None:
    from app.dev import demo

    parsers = dict(_commands(build_parser(with_dev=True)))
    stack_parser = argparse.ArgumentParser(prog="ztauthz dev stack")
    demo.add_arguments(stack_parser)
    parsers[("dev", "stack")] = stack_parser
    missing = []
    for path, parser in parsers.items():
        if path and path != ("dev", "stack") and not parser.description:
            missing.append(" ".join(path))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "ztauthz")
def test_help_through_the_real_cli(path: tuple[str, ...]) -> None:
    done = ztauthz(*path, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("usage: ")
    if not path:
        for code in ("0 ", "1 ", "2 ", "3 ", "130", "141"):
            assert f"\n  {code}" in done.stdout  # the exit codes, stated once, at the top
    # Every option with a default shows it (what HelpFormatter adds).
    if path == ("dev", "token"):
        assert "signing algorithm (default: RS256)" in " ".join(done.stdout.split())
    if path == ("injector", "serve"):
        assert "(default: info)" in done.stdout


def test_dev_stack_help_lists_every_port_and_its_default() -> None:
    done = ztauthz("dev", "stack", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "--envoy-port ENVOY_PORT envoy port (0: any free) (default: 10000)" in text


def serve_config(path: Path, server: str, extra: str = "") -> Path:
    """A ``ztauthz serve`` configuration with ``server`` as its server section."""
    path.write_text(
        f"server: {server}\n"
        "issuers:\n"
        "  - {issuer: 'http://127.0.0.1:9', audiences: [x], jwks_uri: 'http://127.0.0.1:9/j'}\n"
        f"policies: {ROOT / 'policies'}\n" + extra,
        encoding="utf-8",
    )
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another socket listens on."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


def in_use(setting: str, port: int) -> list[str]:
    return [
        f"ztauthz: {setting}: port {port} is already in use "
        f"(127.0.0.1:{port}: another process, or another ztauthz listener)"
    ]


ANY_PORTS = "{check: {host: 127.0.0.1, port: 0}, admin: {host: 127.0.0.1, port: 0}}"


def test_a_busy_port_is_one_line_and_exit_2_before_any_listener(
    tmp_path: Path, busy_port: int
) -> None:
    grpc = f"grpc: {{enabled: true, host: 127.0.0.1, port: {busy_port}}}"
    path = serve_config(tmp_path / "config.yaml", ANY_PORTS[:-1] + ", " + grpc + "}")
    done = ztauthz("serve", "--config", str(path))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == in_use("server.grpc.port", busy_port)


def test_the_same_busy_port_for_the_check_listener(tmp_path: Path, busy_port: int) -> None:
    server = f"{{check: {{host: 127.0.0.1, port: {busy_port}}}, admin: {{port: 0}}}}"
    done = ztauthz("serve", "--config", str(serve_config(tmp_path / "config.yaml", server)))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == in_use("server.check.port", busy_port)


def test_a_busy_ssf_receiver_port_is_one_line_and_exit_2(tmp_path: Path, busy_port: int) -> None:
    # The receiver's own listener is probed with the others: a taken port must not surface as
    # a log line after the admin listener has already answered /readyz.
    token = tmp_path / "push-token"
    token.write_text("a-push-token-of-enough-length\n", encoding="utf-8")
    signals = (
        "signals:\n"
        f"  receiver: {{host: 127.0.0.1, port: {busy_port}}}\n"
        "  transmitters:\n"
        "    - name: idp\n"
        "      issuer: 'http://127.0.0.1:9'\n"
        "      audiences: [urn:ztauthz:ssf-receiver]\n"
        f"      push: {{token_file: {token}}}\n"
    )
    path = serve_config(tmp_path / "config.yaml", ANY_PORTS, signals)
    done = ztauthz("serve", "--config", str(path))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == in_use("signals.receiver.port", busy_port)


def test_an_unavailable_propagator_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = serve_config(tmp_path / "config.yaml", ANY_PORTS)
    done = ztauthz("serve", "--config", str(path), env={"OTEL_PROPAGATORS": "tracecontext,jaeger"})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "ztauthz: OTEL_PROPAGATORS: unsupported jaeger; use any of tracecontext, baggage, b3, "
        "b3multi, or none alone"
    ]


def test_a_closed_stdout_ends_quietly() -> None:
    """``ztauthz explain ... --json | head``: no BrokenPipeError traceback. ``true`` exits at
    once, so the pipe is closed before ztauthz writes (``head`` might read it all first)."""
    explain = f"{' '.join(CLI)} explain --policies policies --path /invoices --json"
    command = f"{explain} | true; echo rc=${{PIPESTATUS[0]}}; {explain} | head -1"
    done = subprocess.run(
        ["/bin/bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.stdout.splitlines() == ["rc=141", "{"]
    assert done.stderr == ""
