"""Where the development tools keep their state: one directory, whatever the working directory.

``ztauthz dev stack`` writes its keys, PKI, configurations and logs there, and ``dev token`` /
``dev device-token`` / ``dev issuer`` read the same keys from there, so a token minted from
any directory is signed by the keys the running stack trusts. In order:

1. ``$ZTAUTHZ_DEV_DIR`` when set (or ``--dir`` / ``--keys`` on the command line);
2. ``.dev/`` at the root of the source checkout this code runs from (an editable install:
   ``make venv``), so the paths in the docs (``.dev/pki/...``, ``.dev/logs/...``) hold;
3. otherwise (installed from a wheel) ``$XDG_STATE_HOME/ztauthz/dev``, by default
   ``~/.local/state/ztauthz/dev``.

The stack also records which issuers it runs (``stack.json``), so ``dev token`` can say which
stack its token is for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

ENV: Final = "ZTAUTHZ_DEV_DIR"
STACK_FILE: Final = "stack.json"
_CHECKOUT_ROOT: Final = Path(__file__).resolve().parents[2]  # app/dev/state.py -> the root


def _is_source_checkout(root: Path) -> bool:
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return False
    return 'name = "ztauthz"' in text


def dev_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The development state directory (absolute; not created here)."""
    env = os.environ if environ is None else environ
    if env.get(ENV):
        return Path(env[ENV]).expanduser().resolve()
    if _is_source_checkout(_CHECKOUT_ROOT):
        return _CHECKOUT_ROOT / ".dev"
    state_home = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home).expanduser().resolve() / "ztauthz" / "dev"


def keys_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The dev issuer's signing keys."""
    return dev_dir(environ) / "keys"


def device_keys_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The dev device provider's signing keys."""
    return dev_dir(environ) / "device-keys"


def write_stack_record(workdir: Path, record: Mapping[str, Any]) -> None:
    """What the running stack serves (issuer URLs, audience, pid), for ``dev token``."""
    (workdir / STACK_FILE).write_text(json.dumps(dict(record), indent=2) + "\n", encoding="utf-8")


def clear_stack_record(workdir: Path) -> None:
    (workdir / STACK_FILE).unlink(missing_ok=True)


def running_stack(workdir: Path) -> dict[str, Any] | None:
    """The record of the stack running on ``workdir``, or None (none recorded, or its process
    is gone)."""
    try:
        record = json.loads((workdir / STACK_FILE).read_text(encoding="utf-8"))
        os.kill(int(record["pid"]), 0)  # signal 0: does the process still exist?
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if isinstance(record, dict) else None
