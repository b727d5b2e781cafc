"""``python3 -m tools.container_check`` (``make container-check``): see docs/containers.md."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Final, NoReturn

from tools.container_check import images, walkthrough
from tools.container_check.engine import Engine, build_override, ensure_engine
from tools.container_check.shell import Steps, guarded, say

REPO: Final = Path(__file__).resolve().parents[2]
# server.shutdown_grace's default (app/settings.py; tests/deploy keeps the two equal).
DEFAULT_GRACE: Final = 5.0

STEPS: Final = (
    "engine: Docker and Compose v2",
    "images: bases and services",
    "build: docker build as documented",
    "image: labels, user, HEALTHCHECK, --help, no build tools",
    "hardened run: read-only, non-root, cap-drop ALL",
    "compose 1: up --build --wait, healthy in order",
    "compose 2: no token -> 401 challenge",
    "compose 3: reader token -> GET allowed",
    "compose 4: denials (403 reasons)",
    "compose 5: decision-log line, trace in Jaeger",
    "compose 6: policy edit reloaded, broken refused",
    "compose 7: down within 10 s",
)


def _terminated(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # runs every clean-up below


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="container-check", description=__doc__)
    parser.add_argument(
        "--keep-engine",
        action="store_true",
        help="leave running a dockerd that the check started (it is stopped by default)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = cache / "ztauthz-container-check"
    workdir = Path(tempfile.mkdtemp(prefix="container-check."))
    steps = Steps(planned=list(STEPS))
    engine: Engine | None = None
    compose: walkthrough.Compose | None = None
    stack_down = True
    started = time.monotonic()
    try:
        with guarded():
            with steps.step(STEPS[0]) as notes:
                engine = ensure_engine(workdir, cache)
                notes.append(f"engine {engine.version}, compose {engine.compose_version}")
                notes += engine.notes
            assert engine is not None
            with steps.step(STEPS[1]) as notes:
                config = walkthrough.Compose(engine, REPO / "deploy" / "compose", None).config()
                notes += images.ensure_images(engine, REPO, images.needed_images(REPO, config))
            project = str(config.get("name", "compose"))
            with steps.step(STEPS[2]) as notes:
                notes += images.build_image(engine, REPO)
            with steps.step(STEPS[3]) as notes:
                notes += images.check_image(engine, REPO)
            with steps.step(STEPS[4]) as notes:
                notes += images.hardened_run(engine, REPO, DEFAULT_GRACE)
            override = build_override(config, engine)
            override_path = None
            if override is not None:
                override_path = workdir / "compose.override.yaml"  # JSON is YAML
                override_path.write_text(json.dumps(override, indent=2))
                say(f"\nthis engine needs an override ({override_path}):\n{json.dumps(override)}")
            compose = walkthrough.Compose(engine, REPO / "deploy" / "compose", override_path)
            stack_down = False
            with steps.step(STEPS[5]) as notes:
                notes += walkthrough.up(compose, project, config)
            with steps.step(STEPS[6]) as notes:
                notes += walkthrough.no_token()
            with steps.step(STEPS[7]) as notes:
                notes += walkthrough.reader_allowed(compose)
            with steps.step(STEPS[8]) as notes:
                denied, decision_id = walkthrough.denials(compose)
                notes += denied
            with steps.step(STEPS[9]) as notes:
                notes += walkthrough.traces_and_logs(compose, decision_id)
            with steps.step(STEPS[10]) as notes:
                notes += walkthrough.policy_reload(compose)
            with steps.step(STEPS[11]) as notes:
                stack_down = True
                notes += walkthrough.down(compose, project)
    finally:
        if compose is not None and not stack_down:
            say("\nstopping the stack")
            compose("down", check=False, timeout=120)
        if engine is not None and not args.keep_engine:
            engine.stop()
        say(steps.summary(time.monotonic() - started))
        if steps.failed:
            say(f"work files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if steps.failed else 0


if __name__ == "__main__":
    sys.exit(main())
