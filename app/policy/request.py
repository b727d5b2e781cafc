"""What a request must be before any rule looks at it, defined once for the service
(``app/pipeline.py``), ``ztauthz explain`` and ``ztauthz policy test``: a host and a path that
read one way (``normalize``), and a method a policy can name (``app/http_facts.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.http_facts import METHODS
from app.policy.evaluate import PolicyInput
from app.policy.normalize import PathRejected, normalize_host, normalize_path
from app.reasons import Reason, describe


class Unmatchable(Exception):
    """No rule can be asked about this request. ``reason`` is ``path_rejected``,
    ``path_ambiguous`` or ``method_not_allowed``; ``detail`` is fixed text, never request data."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def policy_input(
    method: str, host: str, path: str, headers: Mapping[str, str], **evidence: Any
) -> PolicyInput:
    """The request as policies see it (``evidence``: PolicyInput's evidence fields); raises
    ``Unmatchable``. ``method`` is upper-case already, as every transport maps it."""
    try:
        request = PolicyInput(
            method=method,
            host=normalize_host(host),
            path=normalize_path(path),
            headers=headers,
            **evidence,
        )
    except PathRejected as exc:
        raise Unmatchable(exc.reason, exc.detail) from None
    except ValueError as exc:  # the host
        raise Unmatchable(Reason.PATH_REJECTED, str(exc)) from None
    if method not in METHODS:
        raise Unmatchable(Reason.METHOD_NOT_ALLOWED, describe(Reason.METHOD_NOT_ALLOWED))
    return request
