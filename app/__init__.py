"""ztauthz: a zero-trust authorization sidecar for Envoy's ext_authz filter."""

__version__ = "0.1.0"
