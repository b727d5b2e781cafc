"""What a token's ``cnf`` claim (RFC 7800 §3.1) binds it to, named as policies name it.

``dpop``: a DPoP key (``cnf.jkt``, RFC 9449 §6.1); ``mtls``: a client certificate
(``cnf["x5t#S256"]``, RFC 8705 §3.1). A verified principal that carries either has already
proven it (app/identity/binding.py refuses every request where it does not hold), so
policies read the binding from the claims alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

CNF: Final = "cnf"
JKT: Final = "jkt"
X5T_S256: Final = "x5t#S256"
DPOP: Final = "dpop"
MTLS: Final = "mtls"
BINDINGS: Final = frozenset({DPOP, MTLS})


def bindings_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """The bindings a verified token's claims carry: a subset of {"dpop", "mtls"}."""
    cnf = claims.get(CNF)
    if not isinstance(cnf, dict):
        return frozenset()
    found = set()
    if isinstance(cnf.get(JKT), str):
        found.add(DPOP)
    if isinstance(cnf.get(X5T_S256), str):
        found.add(MTLS)
    return frozenset(found)
