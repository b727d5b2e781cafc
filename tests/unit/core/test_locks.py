"""requirements-dev.lock pins the whole development set (issue 16): a fresh clone tests against
the versions CI used. (requirements.lock, the image's, is checked in tests/deploy.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[3]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _pins(name: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[str, int]] = {}
    text = re.sub(r"\\\n\s*", " ", (REPO / name).read_text(encoding="utf-8"))
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, _, hashes = line.partition(" ")
        package, _, version = requirement.partition("==")
        pins[canonicalize_name(package)] = (version, hashes.count("--hash=sha256:"))
    return pins


def test_every_development_dependency_is_pinned_in_range_with_hashes() -> None:
    dev = _pins("requirements-dev.lock")
    assert all(version and hashes for version, hashes in dev.values())
    for spec in [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["dev"]]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in dev, f"{name} is not in requirements-dev.lock: run `make lock`"
        assert requirement.specifier.contains(dev[name][0], prereleases=True), (name, dev[name])


def test_both_locks_agree_on_every_runtime_version() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    differ = {n: (v, dev.get(n, ("missing", 0))[0]) for n, (v, _) in runtime.items()}
    assert {n: vs for n, vs in differ.items() if vs[0] != vs[1]} == {}


def test_the_installers_are_pinned_too() -> None:
    """`make venv` installs the dev lock with --require-hashes; pip-tools needs pip and
    setuptools, so the lock holds them (--allow-unsafe) instead of taking whatever was there."""
    dev = _pins("requirements-dev.lock")
    assert {"pip", "setuptools"} <= set(dev)
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "--require-hashes --no-deps -r requirements-dev.lock" in makefile
