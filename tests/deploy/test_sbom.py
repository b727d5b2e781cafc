"""``make sbom``: the Makefile's own command, run here, gives a valid CycloneDX SBOM of exactly
the image's Python runtime set (requirements.lock), with ztauthz as the root component."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from tests.deploy.deploy_support import REPO
from tests.deploy.test_container_image import _lock


def sbom_command(output: Path) -> list[str]:
    """The recipe of the Makefile's ``sbom`` target that writes the SBOM, variables filled in."""
    text = (REPO / "Makefile").read_text()
    recipe = re.search(r"^sbom:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe, "no sbom target in the Makefile"
    lines = re.sub(r"\\\n\t?\s*", " ", recipe.group(1)).splitlines()
    (command,) = [line.strip() for line in lines if "cyclonedx_py" in line]
    command = command.replace("$(BIN)", str(Path(sys.executable).parent))
    return shlex.split(command.replace("$(SBOM)", str(output)))


def test_make_sbom_lists_the_locked_runtime_set(tmp_path: Path) -> None:
    output = tmp_path / "ztauthz.cdx.json"
    result = subprocess.run(
        sbom_command(output), cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    bom = json.loads(output.read_text())
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.6")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    root = bom["metadata"]["component"]
    assert (root["name"], root["version"]) == (project["name"], project["version"])
    assert root["type"] == "application"
    lock = _lock()
    components: dict[str, dict[str, Any]] = {
        canonicalize_name(c["name"]): c for c in bom["components"]
    }
    assert set(components) == set(lock)  # the runtime set: nothing more, nothing less
    for name, (version, hashes) in lock.items():
        component = components[name]
        assert component["version"] == version
        assert component["purl"] == f"pkg:pypi/{component['name']}@{version}"
        listed = {
            h["content"] for ref in component["externalReferences"] for h in ref.get("hashes", [])
        }
        assert listed == set(hashes), name
