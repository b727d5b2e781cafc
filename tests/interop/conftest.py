"""The session's oidc-provider (see oidc_provider_support.py).

Without Node.js the interop tests are skipped; without the npm packages they fail, since the
fix is one command: ``make test``, or ``cd tests/interop && npm ci``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from app.dev.procs import ProcessError
from tests.interop.oidc_provider_support import NotInstalled, OidcProvider, run_oidc_provider


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js (`node`) is not installed; the oidc-provider interop tests need it")
    log_path = tmp_path_factory.mktemp("oidc-provider") / "provider.log"
    try:
        with run_oidc_provider(node, log_path) as provider:
            yield provider
    except (NotInstalled, ProcessError) as exc:  # raised while starting, never by a test
        pytest.fail(str(exc), pytrace=False)
