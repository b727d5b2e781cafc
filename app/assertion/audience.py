"""Which upstream an assertion is for (its ``aud``), from the request's host and path.

The audience names the service behind the route, a fact of the deployment rather than of the
authorization rules: it lives in the sidecar's configuration (``assertion.audience``, and
``assertion.routes`` where one Envoy fronts several upstreams), not in policies, which are
reviewed as access rules and often shared by environments whose upstreams are named apart. It
is matched on the host and path ztauthz itself decided on (normalized as policies see them), so
it is the same over HTTP and gRPC ext_authz (Envoy's per-route context extensions reach gRPC
only). Hosts follow policy conventions (``*.example.com``: one label); path prefixes match
whole segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.policy.normalize import PathRejected, normalize_host, normalize_path
from app.settings import AssertionRoute, ConfigError
from app.yamlsrc import key_path


@dataclass(frozen=True, slots=True)
class _Route:
    audience: str
    hosts: frozenset[str]  # normalized; empty: any host
    parents: frozenset[str]  # "*.example.com" as "example.com"
    prefixes: tuple[str, ...]  # normalized; empty: any path

    def matches(self, host: str, path: str) -> bool:
        if self.hosts or self.parents:
            _, dot, parent = host.partition(".")
            if host not in self.hosts and not (dot and parent in self.parents):
                return False
        if not self.prefixes:
            return True
        return any(
            path == prefix or path.startswith(prefix + "/") or prefix == "/"
            for prefix in self.prefixes
        )


def _compile(position: int, route: AssertionRoute) -> _Route:
    def where(*key: str | int) -> str:
        return key_path(("assertion", "routes", position, *key))

    hosts: set[str] = set()
    parents: set[str] = set()
    for index, raw in enumerate(route.hosts):
        wildcard = raw.startswith("*.")
        try:
            name = normalize_host(raw[2:] if wildcard else raw)
        except ValueError as exc:
            raise ConfigError([f"{where('hosts', index)}: {exc}"]) from None
        (parents if wildcard else hosts).add(name)
    prefixes: list[str] = []
    for index, raw in enumerate(route.path_prefixes):
        try:
            prefix = normalize_path(raw)
        except PathRejected as exc:
            raise ConfigError([f"{where('path_prefixes', index)}: {exc.detail}"]) from None
        if prefix != raw.rstrip("/") and not (prefix == "/" and raw == "/"):
            raise ConfigError(
                [f"{where('path_prefixes', index)}: give the path as policies match it: {prefix}"]
            )
        prefixes.append(prefix)
    return _Route(route.audience, frozenset(hosts), frozenset(parents), tuple(prefixes))


class Audiences:
    """The configured routes, compiled once; ``for_request`` is called on every allow."""

    def __init__(self, default: str, routes: Sequence[AssertionRoute] = ()) -> None:
        """Raises ``ConfigError`` naming the route key of a host or prefix that cannot match."""
        self.default = default
        self._routes = tuple(_compile(position, route) for position, route in enumerate(routes))

    def for_request(self, host: str, path: str) -> str:
        """The audience for the request's raw host and path (the first route that matches).

        Raises ``ValueError``/``PathRejected`` for a host or path policies could not match
        either (never for an allowed request: the pipeline refuses those first)."""
        if not self._routes:
            return self.default
        host = normalize_host(host)
        path = normalize_path(path)
        for route in self._routes:
            if route.matches(host, path):
                return route.audience
        return self.default
