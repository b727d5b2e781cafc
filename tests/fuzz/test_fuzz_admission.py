"""AdmissionReview handling under hostile input: the injector's HTTP app (in process) and
``mutate`` on generated pods.

Invariants: no 5xx (a body that is not a review is 400 with an error, anything else is a
well-formed AdmissionReview answer for the uid asked about); a patch applies, and the pod it
makes has unique container names across containers, initContainers and ephemeralContainers,
both sidecars, and no reference left in the app container to the port name Envoy took over.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.injector.mutate import ENVOY, ZTAUTHZ, MalformedReview, mutate, read_review
from app.injector.server import create_injector_app
from tests.unit.dev.dev_helpers import serving
from tests.unit.injector.injector_support import apply_answer, make_review, shipped_config

CONFIG = shipped_config()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """The injector's app served by uvicorn on loopback (plain HTTP: TLS is not under test)."""
    with (
        serving(lambda _url: create_injector_app(CONFIG)) as url,
        httpx.Client(base_url=url, trust_env=False) as http,
    ):
        yield http


names = st.sampled_from(
    ["app", "web", "worker", "init", "debug", "x", "y", "z", "ztauthz", "ztauthz-envoy"]
)
port_names = st.sampled_from(
    [None, "http", "http", "web", "metrics", "app-http", "app-web", "envoy-health", "grpc"]
)
ports = st.fixed_dictionaries(
    {"containerPort": st.sampled_from([80, 8080, 3000, 9090, 8081, 8082, 9000, 15000])},
    optional={"name": port_names, "protocol": st.sampled_from(["TCP", "UDP"])},
).map(lambda p: {k: v for k, v in p.items() if v is not None})
port_refs = st.sampled_from(["http", "web", "metrics", "app-http", 8080, 3000])
handlers = st.one_of(
    st.builds(lambda p: {"httpGet": {"path": "/x", "port": p}}, port_refs),
    st.builds(lambda p: {"tcpSocket": {"port": p}}, port_refs),
    st.just({"exec": {"command": ["true"]}}),
)
containers = st.fixed_dictionaries(
    {"name": names, "image": st.just("img")},
    optional={
        "ports": st.lists(ports, max_size=3),
        "readinessProbe": handlers,
        "livenessProbe": handlers,
        "startupProbe": handlers,
        "lifecycle": st.fixed_dictionaries(
            {}, optional={"postStart": handlers, "preStop": handlers}
        ),
    },
)
# The container Envoy is most likely to take over: one port, usually named.
app_containers = st.fixed_dictionaries(
    {
        "name": st.just("app"),
        "image": st.just("img"),
        "ports": st.lists(ports, min_size=1, max_size=1),
    },
    optional={
        "readinessProbe": handlers,
        "livenessProbe": handlers,
        "startupProbe": handlers,
        "lifecycle": st.fixed_dictionaries(
            {}, optional={"postStart": handlers, "preStop": handlers}
        ),
    },
)
pods = st.fixed_dictionaries(
    {
        "apiVersion": st.just("v1"),
        "kind": st.just("Pod"),
        "metadata": st.fixed_dictionaries(
            {"namespace": st.just("shop")},
            optional={
                "labels": st.dictionaries(
                    st.sampled_from(["ztauthz.dev/inject", "app"]),
                    st.sampled_from(["true", "false", "x"]),
                ),
                "annotations": st.dictionaries(
                    st.sampled_from(["ztauthz.dev/app-port", "ztauthz.dev/status", "note"]),
                    st.sampled_from(["http", "8080", "injected", "web", ""]),
                ),
            },
        ),
        "spec": st.fixed_dictionaries(
            {
                "containers": st.tuples(app_containers, st.lists(containers, max_size=2)).map(
                    lambda parts: [parts[0], *parts[1]]
                )
            },
            optional={
                "initContainers": st.lists(containers, max_size=2),
                "ephemeralContainers": st.lists(containers, max_size=1),
                "volumes": st.lists(
                    st.fixed_dictionaries(
                        {"name": st.sampled_from(["data", "ztauthz-tmp"]), "emptyDir": st.just({})}
                    ),
                    max_size=2,
                ),
                "hostNetwork": st.sampled_from([False, False, False, True]),
            },
        ),
    }
)
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


def all_names(pod: dict[str, Any]) -> list[str]:
    spec = pod["spec"]
    return [
        c["name"]
        for key in ("containers", "initContainers", "ephemeralContainers")
        for c in spec.get(key, [])
    ]


@given(pods, st.sampled_from([True, True, True, False]))
def test_a_pod_is_injected_correctly_or_refused(pod: dict[str, Any], opted_in: bool) -> None:
    answer = mutate(make_review(pod), CONFIG, namespace_opted_in=opted_in)
    response = answer["response"]
    assert answer["kind"] == "AdmissionReview" and response["uid"]
    if not response["allowed"]:
        assert response["status"]["code"] in (400, 422)
        return
    if "patch" not in response:
        return
    patched = apply_answer(pod, answer)
    seen = all_names(patched)
    # The patch adds each sidecar name once, and only where no container had it.
    assert seen.count(ZTAUTHZ) == seen.count(ENVOY) == 1, seen
    assert sorted(seen) == sorted([*all_names(pod), ZTAUTHZ, ENVOY])
    containers = {c["name"]: c for c in patched["spec"]["containers"]}
    assert ZTAUTHZ in containers and ENVOY in containers
    taken = containers[ENVOY]["ports"][0]["name"]
    renamed = f"app-{taken}"[:15].rstrip("-")
    owners = [
        c
        for c in patched["spec"]["containers"]
        if any(p.get("name") == renamed for p in c.get("ports", []))
    ]
    for owner in owners:
        # The app container's own references moved with its port.
        assert f'"port": "{taken}"' not in json.dumps(owner), owner
    # Envoy's port name now names one port of the pod: Envoy's.
    named = [
        p
        for c in patched["spec"]["containers"]
        for p in c.get("ports", [])
        if p.get("name") == taken
    ]
    assert len(named) == 1


@given(junk)
def test_any_request_object_is_answered(obj: Any) -> None:
    review = make_review(obj)
    answer = mutate(review, CONFIG, namespace_opted_in=True)
    assert answer["response"]["uid"] == review["request"]["uid"]


@given(st.one_of(st.binary(max_size=300), junk.map(lambda v: json.dumps(v).encode())))
@example(b"[" * 5000 + b"]" * 5000)
@example(b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":' * 200)
def test_any_body_gets_400_or_an_admission_review(client: httpx.Client, body: bytes) -> None:
    with contextlib.suppress(MalformedReview):  # MalformedReview, or a value: nothing else
        read_review(body)
    response = client.post("/inject/namespace", content=body)
    assert response.status_code in (200, 400), response.text
    payload = response.json()
    if response.status_code == 400:
        assert payload["error"].startswith("malformed AdmissionReview")
    else:
        assert payload["kind"] == "AdmissionReview"
