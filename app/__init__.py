"""ztauthz: a zero-trust authorization sidecar for Envoy's ext_authz filter."""

import sys

__version__ = "0.1.0"

# httpx imports its command-line client (with rich, pygments and click: about 3 MiB resident
# and 80 ms of start-up in every worker) whenever those are installed, as they are here for
# the CEL package's own command line. ztauthz never runs it: marked absent, it makes httpx
# take its own fallback for a missing CLI (a stub ``httpx.main``). See also
# app/policy/cel_engine.py, which keeps that CEL command line from loading.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
