"""`ztauthz injector serve` as the API server meets it: a real process, real TLS on loopback."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.dev.ports import free_port
from app.dev.procs import ManagedProcess, TcpReady
from tests.unit.injector.injector_support import (
    SHIPPED_CONFIG,
    apply_answer,
    make_pod,
    make_review,
    write_certificates,
)


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    ca: Path
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=trusting(self.ca), timeout=10.0)


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def injector_argv(cert: Path, key: Path, port: int, config: Path = SHIPPED_CONFIG) -> list[str]:
    return [
        sys.executable,
        "-m",
        "app.injector",
        "serve",
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    directory = tmp_path_factory.mktemp("injector")
    ca, cert, key = write_certificates(directory)
    port = free_port()
    process = ManagedProcess(
        "injector",
        injector_argv(cert, key, port),
        log_path=directory / "injector.log",
        ready=TcpReady("127.0.0.1", port),
    )
    process.start()
    try:
        yield Webhook(f"https://127.0.0.1:{port}", ca, process.log_path)
    finally:
        process.stop()


def test_namespace_entry_injects_over_tls(webhook: Webhook) -> None:
    pod = make_pod()
    with webhook.client() as client:
        response = client.post("/inject/namespace", json=make_review(pod, uid="uid-1"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["response"]["uid"] == "uid-1"
    assert answer["response"]["allowed"] is True
    names = [c["name"] for c in apply_answer(pod, answer)["spec"]["containers"]]
    assert names == ["app", "ztauthz", "ztauthz-envoy"]
    assert "injected uid=uid-1 pod=shop/invoices-6d4cf56db6-*" in webhook.log.read_text()


def test_pod_entry_leaves_a_pod_that_did_not_ask_alone(webhook: Webhook) -> None:
    with webhook.client() as client:
        answer = client.post("/inject/pod", json=make_review(make_pod(), uid="uid-2")).json()
    assert answer["response"] == {"uid": "uid-2", "allowed": True}


def test_pod_entry_injects_a_pod_that_asked(webhook: Webhook) -> None:
    pod = make_pod(annotations={"ztauthz.dev/inject": "true"})
    with webhook.client() as client:
        answer = client.post("/inject/pod", json=make_review(pod)).json()
    assert "patch" in answer["response"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "malformed AdmissionReview: the body is not JSON"),
        (b"\xff\xfe{}", "malformed AdmissionReview: the body is not JSON"),
        # Deep nesting answered a bare 500 (RecursionError in the JSON parser).
        (b"[" * 5000 + b"]" * 5000, "nests more than 100 levels deep"),
        (b'{"a":' * 1000 + b"1" + b"}" * 1000, "nests more than 100 levels deep"),
        (b"[" * 100_000, "nests more than 100 levels deep"),
        (b"[]", "malformed AdmissionReview: expected a JSON object"),
        (
            json.dumps(
                {**make_review(make_pod()), "apiVersion": "admission.k8s.io/v1beta1"}
            ).encode(),
            "expected apiVersion 'admission.k8s.io/v1'",
        ),
    ],
)
def test_malformed_reviews_get_400_and_a_clear_error(
    webhook: Webhook, body: bytes, message: str
) -> None:
    with webhook.client() as client:
        response = client.post(
            "/inject/namespace", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_a_refusal_travels_inside_the_admission_review(webhook: Webhook) -> None:
    with webhook.client() as client:
        answer = client.post(
            "/inject/namespace", json=make_review(make_pod(hostNetwork=True), uid="uid-3")
        ).json()
    assert answer["response"]["allowed"] is False
    assert "hostNetwork" in answer["response"]["status"]["message"]


def test_oversized_bodies_are_refused(webhook: Webhook) -> None:
    with webhook.client() as client:
        response = client.post("/inject/namespace", content=b" " * (5 * 1024 * 1024))
    assert response.status_code == 413


def test_health_and_unknown_paths(webhook: Webhook) -> None:
    with webhook.client() as client:
        assert client.get("/healthz").json() == {"status": "alive"}
        assert client.get("/inject/namespace").status_code == 405
        assert client.post("/mutate", json={}).status_code == 404


def test_only_tls_and_only_with_the_right_ca(webhook: Webhook, tmp_path: Path) -> None:
    plain = webhook.url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/healthz", timeout=5.0)
    other_ca, _, _ = write_certificates(tmp_path)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{webhook.url}/healthz", verify=trusting(other_ca), timeout=5.0)


@pytest.mark.parametrize("broken", ["config", "cert"])
def test_it_refuses_to_start_without_a_valid_config_or_certificate(
    tmp_path: Path, broken: str
) -> None:
    _, cert, key = write_certificates(tmp_path)
    config = SHIPPED_CONFIG
    if broken == "config":
        config = tmp_path / "injector.yaml"
        config.write_text("images: {}\n")
    else:
        cert.write_text("not a certificate")
    result = subprocess.run(
        injector_argv(cert, key, free_port(), config),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    expected = "invalid configuration" if broken == "config" else "cannot serve"
    assert f"ztauthz injector: {expected}" in result.stderr


def test_a_pod_with_malformed_metadata_is_refused_not_crashed_on(webhook: Webhook) -> None:
    review = make_review({"metadata": "oops", "spec": {"containers": [{"name": "a"}]}})
    with webhook.client() as client:
        response = client.post("/inject/namespace", json=review)
    assert response.status_code == 200
    assert "metadata is not an object" in response.json()["response"]["status"]["message"]
