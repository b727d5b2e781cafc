"""``mutate``: an admission.k8s.io/v1 AdmissionReview in, the AdmissionReview answer out.

Pure: no I/O, no clock. The pod is analysed (app/injector/pod.py: who asked, whether and how it
can be injected) and, when it gets the sidecars, patched (app/injector/patch.py: the JSONPatch).

Idempotent: a pod that already carries both sidecars gets no patch. Pods that did not ask get
none either. A pod that asked but cannot be injected safely is refused with a message saying
what to change: a pod that asked for the authorization sidecar never starts without it.

``read_review`` turns the request body into the review, refusing (``MalformedReview``) what is
not JSON or nests deeper than ``MAX_DEPTH`` (measured before parsing: a thousand levels cost a
scan, not a RecursionError).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from app.injector.config import InjectorConfig
from app.injector.patch import build_patch
from app.injector.pod import (
    API_VERSION,
    ENVOY,
    INJECTED,
    STATUS,
    ZTAUTHZ,
    MalformedReview,
    Refused,
    analyse,
    read_request,
    valid_port_name,
)
from app.json_depth import may_nest_deeper, nesting_depth

__all__ = [
    "ENVOY",
    "INJECTED",
    "MAX_DEPTH",
    "STATUS",
    "ZTAUTHZ",
    "MalformedReview",
    "answer",
    "mutate",
    "read_request",
    "read_review",
    "valid_port_name",
]

# A Pod nests about twenty levels deep (affinity terms are the deepest); far more is no Pod.
MAX_DEPTH = 100


def read_review(body: bytes) -> Any:
    """The JSON of a review request body; MalformedReview if it is not JSON (or too deep)."""
    if may_nest_deeper(body, MAX_DEPTH) and nesting_depth(body) > MAX_DEPTH:
        raise MalformedReview(f"the body nests more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8)
        raise MalformedReview("the body is not JSON") from None


def mutate(
    review: Mapping[str, Any], config: InjectorConfig, *, namespace_opted_in: bool = False
) -> dict[str, Any]:
    """Answer one AdmissionReview. Raises :class:`MalformedReview` when there is no request uid
    to answer to; any other problem is answered as ``allowed: false`` with a clear message."""
    uid, request = read_request(review)
    try:
        injection = analyse(request, config, namespace_opted_in=namespace_opted_in)
    except Refused as exc:
        return answer(uid, allowed=False, code=exc.code, message=exc.message)
    if injection is None:
        return answer(uid, allowed=True)
    patch = build_patch(injection, config)
    return answer(uid, allowed=True, patch=patch, warnings=injection.warnings)


def answer(
    uid: str,
    *,
    allowed: bool,
    patch: tuple[dict[str, Any], ...] = (),
    warnings: tuple[str, ...] = (),
    code: int = 200,
    message: str = "",
) -> dict[str, Any]:
    """An AdmissionReview response in the exact shape the API server expects."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(patch)).encode()).decode("ascii")
    if warnings:
        response["warnings"] = list(warnings)
    if not allowed:
        response["status"] = {"code": code, "message": f"ztauthz injector: {message}"}
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
