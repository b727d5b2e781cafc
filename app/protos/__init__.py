"""Envoy's gRPC ext_authz messages, as ztauthz declares them for itself.

``envoy_ext_authz.proto`` (hand-written: the fields ztauthz reads and writes, with Envoy's field
numbers, in the proto package ``ztauthz.envoy.auth.v3``) and the modules ``make protos``
generates from it (``envoy_ext_authz_pb2.py`` and its ``.pyi``; do not edit those).
docs/packaging.md says why and how to add a field.
"""
