"""RequestContext: what the transport knows about the original request, and nothing more."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The original request as Envoy described it.

    ``path`` is the raw original path (query included, ``path_prefix`` already removed);
    normalization happens in the policy layer, which rejects what it cannot match safely.
    ``headers`` are lower-cased names; only the headers Envoy allow-listed are present.
    """

    method: str
    host: str
    path: str
    headers: Mapping[str, str]
    transport: str = "http"

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


def make_context(
    method: str, host: str, path: str, headers: Mapping[str, str], transport: str = "http"
) -> RequestContext:
    lowered = MappingProxyType({k.lower(): v for k, v in headers.items()})
    return RequestContext(
        method=method.upper(), host=host, path=path, headers=lowered, transport=transport
    )
