"""Pods and AdmissionReviews in the shape the API server sends, and patch application."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch

from app.injector.config import InjectorConfig, load_injector_config

REPO = Path(__file__).resolve().parents[3]
SHIPPED_CONFIG = REPO / "deploy" / "k8s" / "injector" / "base" / "injector.yaml"


def shipped_config() -> InjectorConfig:
    return load_injector_config(SHIPPED_CONFIG)


def app_container(**extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": "registry.example.com/app:1",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
    }
    container.update(extra)
    return container


def make_pod(
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Pod as a ReplicaSet controller creates it (generateName, no name yet)."""
    metadata: dict[str, Any] = {
        "generateName": "invoices-6d4cf56db6-",
        "namespace": "shop",
        "labels": {"app.kubernetes.io/name": "invoices", **(labels or {})},
    }
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": containers or [app_container()], **spec},
    }


def make_review(
    pod: Any,
    *,
    uid: str = "705ab4f5-6393-11e8-b7cc-42010a800002",
    operation: str = "CREATE",
    kind: str = "Pod",
    sub_resource: str | None = None,
) -> dict[str, Any]:
    """An admission.k8s.io/v1 AdmissionReview request, field for field as the API server sends."""
    group_version_kind = {"group": "", "version": "v1", "kind": kind}
    resource = {"group": "", "version": "v1", "resource": kind.lower() + "s"}
    request: dict[str, Any] = {
        "uid": uid,
        "kind": group_version_kind,
        "resource": resource,
        "requestKind": group_version_kind,
        "requestResource": resource,
        "namespace": "shop",
        "operation": operation,
        "userInfo": {
            "username": "system:serviceaccount:kube-system:replicaset-controller",
            "uid": "a7bd8f3d-1c4c-4b4e-9b7e-1f0f7c2d9f10",
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ],
        },
        "object": pod,
        "oldObject": None,
        "dryRun": False,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    }
    if sub_resource is not None:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def decoded_patch(answer: dict[str, Any]) -> list[dict[str, Any]]:
    response = answer["response"]
    assert response["patchType"] == "JSONPatch"
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(response["patch"], validate=True))
    return ops


def apply_answer(pod: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """The pod the API server would store: the answer's JSONPatch applied (RFC 6902)."""
    if "patch" not in answer["response"]:
        return copy.deepcopy(pod)
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, decoded_patch(answer), in_place=False)
    return patched


# --- certificates ------------------------------------------------------------------------------


def write_certificates(directory: Path, *, serial: int = 1) -> tuple[Path, Path, Path]:
    """A CA and a serving certificate for 127.0.0.1 and the webhook Service's DNS names.

    Returns (ca.crt, tls.crt, tls.key). ``serial`` tells certificates apart after a rotation.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ztauthz-injector-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1000 + serial)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ztauthz-injector")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("ztauthz-injector.ztauthz-system.svc"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.crt", directory / "tls.crt", directory / "tls.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths
