"""The CEL engine: the compiled module ``cel.cel`` of the PyPI package
``common-expression-language``, loaded without the package's command-line tool.

That package's ``cel/__init__.py`` imports its REPL (typer, rich, prompt_toolkit, pygments):
about 9 MiB resident and 0.1 s of start-up in every worker, for nothing ztauthz uses. So, unless
something imported ``cel`` already, the package is registered here as found on disk but not
executed: its submodules (``cel.cel``) import as usual, and ``cel/__init__.py`` never runs
(``tests/unit/core/test_lean_imports.py`` checks it). Everything in ztauthz imports CEL from here.
"""

from __future__ import annotations

import importlib.util
import sys


def _register_without_running(package: str) -> None:
    """Put ``package`` in ``sys.modules`` as found (its ``__path__`` set), not executed."""
    if package in sys.modules:
        return
    spec = importlib.util.find_spec(package)  # finds the package; runs none of its code
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"the {package!r} package (common-expression-language) is missing")
    sys.modules[package] = importlib.util.module_from_spec(spec)


_register_without_running("cel")

from cel.cel import Context, Program  # noqa: E402  (after the package is registered)
from cel.cel import compile as cel_compile  # noqa: E402

__all__ = ["Context", "Program", "cel_compile"]
