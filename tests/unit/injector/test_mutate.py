"""mutate(): who gets the sidecars, what the patch does, and how bad reviews are refused."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from app.injector.config import InjectorConfig
from app.injector.mutate import (
    ENVOY,
    INJECTED,
    STATUS,
    ZTAUTHZ,
    MalformedReview,
    mutate,
    valid_port_name,
)
from tests.unit.injector.injector_support import (
    app_container,
    apply_answer,
    decoded_patch,
    make_pod,
    make_review,
    shipped_config,
)


@pytest.fixture(scope="module")
def config() -> InjectorConfig:
    return shipped_config()


def names(pod: dict[str, Any]) -> list[str]:
    return [c["name"] for c in pod["spec"]["containers"]]


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in pod["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, names(pod)
    return found[0]


# --- who asked ---------------------------------------------------------------------------------

OPT_IN_CASES = [
    # (labels, annotations, namespace opted in) -> injected
    ({}, None, False, False),
    ({}, None, True, True),
    ({}, {"ztauthz.dev/inject": "true"}, False, True),
    ({"ztauthz.dev/inject": "true"}, None, False, True),
    ({}, {"ztauthz.dev/inject": "false"}, True, False),
    ({"ztauthz.dev/inject": "false"}, None, True, False),
    # an explicit opt-out wins over an opt-in, wherever each is written
    ({"ztauthz.dev/inject": "false"}, {"ztauthz.dev/inject": "true"}, False, False),
    ({"ztauthz.dev/inject": "true"}, {"ztauthz.dev/inject": "false"}, True, False),
    ({}, {"unrelated.example.com/x": "y"}, False, False),
]


@pytest.mark.parametrize(("labels", "annotations", "namespace", "injected"), OPT_IN_CASES)
def test_only_pods_that_asked_are_injected(
    config: InjectorConfig,
    labels: dict[str, str],
    annotations: dict[str, str] | None,
    namespace: bool,
    injected: bool,
) -> None:
    pod = make_pod(labels=labels, annotations=annotations)
    before = copy.deepcopy(pod)
    answer = mutate(make_review(pod), config, namespace_opted_in=namespace)
    response = answer["response"]
    assert response["allowed"] is True
    assert ("patch" in response) is injected
    assert pod == before  # the review's object is never modified in place
    patched = apply_answer(pod, answer)
    assert names(patched) == (["app", ZTAUTHZ, ENVOY] if injected else ["app"])


@pytest.mark.parametrize("value", ["yes", "True", "1", ""])
def test_an_unclear_inject_value_is_refused(config: InjectorConfig, value: str) -> None:
    answer = mutate(make_review(make_pod(annotations={"ztauthz.dev/inject": value})), config)
    response = answer["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert 'ztauthz.dev/inject must be "true" or "false"' in response["status"]["message"]


# --- the answer --------------------------------------------------------------------------------


def test_answer_shape_echoes_the_uid_and_carries_a_base64_json_patch(
    config: InjectorConfig,
) -> None:
    answer = mutate(make_review(make_pod(), uid="0f0e-uid"), config, namespace_opted_in=True)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == "0f0e-uid"
    assert response["allowed"] is True
    ops = decoded_patch(answer)
    assert ops and all(op["op"] in {"add", "replace"} for op in ops)
    json.dumps(answer)  # plain JSON all the way down


def test_second_pass_changes_nothing(config: InjectorConfig) -> None:
    pod = make_pod(annotations={"ztauthz.dev/inject": "true"})
    once = apply_answer(pod, mutate(make_review(pod), config))
    again = mutate(make_review(once), config, namespace_opted_in=True)
    assert again["response"] == {"uid": again["response"]["uid"], "allowed": True}
    assert once["metadata"]["annotations"][STATUS] == INJECTED


def test_status_annotation_key_is_escaped_as_a_json_pointer(config: InjectorConfig) -> None:
    pod = make_pod(annotations={"team": "billing"})
    ops = decoded_patch(mutate(make_review(pod), config, namespace_opted_in=True))
    assert {
        "op": "add",
        "path": "/metadata/annotations/ztauthz.dev~1status",
        "value": INJECTED,
    } in ops
    patched = apply_answer(pod, mutate(make_review(pod), config, namespace_opted_in=True))
    assert patched["metadata"]["annotations"] == {"team": "billing", STATUS: INJECTED}


def test_pod_without_annotations_or_volumes_gets_both_maps_created(
    config: InjectorConfig,
) -> None:
    pod = make_pod()
    patched = apply_answer(pod, mutate(make_review(pod), config, namespace_opted_in=True))
    assert patched["metadata"]["annotations"] == {STATUS: INJECTED}
    assert [v["name"] for v in patched["spec"]["volumes"]] == [
        "ztauthz-config",
        "ztauthz-policies",
        "ztauthz-tmp",
        "ztauthz-envoy-tmp",
    ]


def test_a_pod_without_metadata_gets_it(config: InjectorConfig) -> None:
    pod = {"spec": {"containers": [app_container()]}}
    patched = apply_answer(pod, mutate(make_review(pod), config, namespace_opted_in=True))
    assert patched["metadata"] == {"annotations": {STATUS: INJECTED}}


def test_existing_volumes_are_kept_and_sidecar_volumes_appended(config: InjectorConfig) -> None:
    pod = make_pod(volumes=[{"name": "data", "emptyDir": {}}])
    patched = apply_answer(pod, mutate(make_review(pod), config, namespace_opted_in=True))
    assert patched["spec"]["volumes"][0] == {"name": "data", "emptyDir": {}}
    assert len(patched["spec"]["volumes"]) == 5


# --- pointing the port at Envoy ----------------------------------------------------------------


def test_envoy_takes_the_port_name_and_forwards_to_the_app_port(config: InjectorConfig) -> None:
    pod = make_pod()
    patched = apply_answer(pod, mutate(make_review(pod), config, namespace_opted_in=True))
    app_ports = container(patched, "app")["ports"]
    envoy = container(patched, ENVOY)
    assert app_ports == [{"name": "app-http", "containerPort": 8080, "protocol": "TCP"}]
    assert {"name": "http", "containerPort": config.ports.ingress} in envoy["ports"]
    bootstrap = json.loads(envoy["args"][envoy["args"].index("--config-yaml") + 1])
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    upstream = clusters["upstream"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert upstream["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 8080,
    }
    ztauthz = clusters["ztauthz"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert ztauthz["endpoint"]["address"]["socket_address"]["port_value"] == config.ports.check


def test_the_apps_own_probes_follow_the_renamed_port(config: InjectorConfig) -> None:
    app = app_container(
        readinessProbe={"httpGet": {"path": "/ready", "port": "http"}},
        livenessProbe={"tcpSocket": {"port": 8080}},
        startupProbe={"httpGet": {"path": "/started", "port": "http"}},
    )
    pod = make_pod(containers=[app])
    patched = container(
        apply_answer(pod, mutate(make_review(pod), config, namespace_opted_in=True)), "app"
    )
    assert patched["readinessProbe"]["httpGet"]["port"] == "app-http"
    assert patched["startupProbe"]["httpGet"]["port"] == "app-http"
    assert patched["livenessProbe"]["tcpSocket"]["port"] == 8080  # a number still means the app


def test_the_apps_lifecycle_hooks_follow_the_renamed_port(config: InjectorConfig) -> None:
    """postStart/preStop handlers name their own container's ports, as probes do: left on the
    old name they would reach Envoy (or nothing) instead of the app."""
    app = app_container(
        lifecycle={
            "postStart": {"httpGet": {"path": "/warm", "port": "http"}},
            "preStop": {"tcpSocket": {"port": "http"}},
        },
        livenessProbe={"tcpSocket": {"port": "http"}},
    )
    sidecar = {
        "name": "other",
        "image": "o",
        "ports": [{"name": "admin", "containerPort": 9999}],
        "lifecycle": {"preStop": {"httpGet": {"path": "/drain", "port": "admin"}}},
    }
    pod = make_pod(containers=[app, sidecar])
    patched = apply_answer(pod, mutate(make_review(pod), config, namespace_opted_in=True))
    after = container(patched, "app")
    assert after["lifecycle"]["postStart"]["httpGet"] == {"path": "/warm", "port": "app-http"}
    assert after["lifecycle"]["preStop"]["tcpSocket"] == {"port": "app-http"}
    assert after["livenessProbe"]["tcpSocket"]["port"] == "app-http"
    assert after["ports"] == [{"name": "app-http", "containerPort": 8080, "protocol": "TCP"}]
    assert container(patched, "other") == sidecar  # other containers' names are their own
    # Nothing in the app container still names the port Envoy took over.
    assert '"http"' not in json.dumps(after)


def test_hooks_without_a_port_handler_are_left_alone(config: InjectorConfig) -> None:
    hooks = {
        "postStart": {"exec": {"command": ["/bin/warm"]}},
        "preStop": {"sleep": {"seconds": 5}},
    }
    pod = make_pod(containers=[app_container(lifecycle=copy.deepcopy(hooks))])
    patched = apply_answer(pod, mutate(make_review(pod), config, namespace_opted_in=True))
    assert container(patched, "app")["lifecycle"] == hooks


PORT_CHOICE_CASES = [
    # (ports of the app container, annotation app-port, Envoy's port name, app port after)
    (
        [{"name": "web", "containerPort": 3000}],
        None,
        "web",
        {"name": "app-web", "containerPort": 3000},
    ),
    (
        [{"name": "web", "containerPort": 3000}, {"name": "metrics", "containerPort": 9090}],
        "3000",
        "web",
        {"name": "app-web", "containerPort": 3000},
    ),
    (
        [{"name": "web", "containerPort": 3000}, {"name": "metrics", "containerPort": 9090}],
        "web",
        "web",
        {"name": "app-web", "containerPort": 3000},
    ),
    ([{"containerPort": 3000}], None, "http", {"containerPort": 3000}),
]


@pytest.mark.parametrize(("ports", "requested", "envoy_name", "app_after"), PORT_CHOICE_CASES)
def test_which_port_envoy_takes_over(
    config: InjectorConfig,
    ports: list[dict[str, Any]],
    requested: str | None,
    envoy_name: str,
    app_after: dict[str, Any],
) -> None:
    annotations = None if requested is None else {"ztauthz.dev/app-port": requested}
    pod = make_pod(annotations=annotations, containers=[app_container(ports=ports)])
    answer = mutate(make_review(pod), config, namespace_opted_in=True)
    patched = apply_answer(pod, answer)
    assert container(patched, ENVOY)["ports"][0] == {
        "name": envoy_name,
        "containerPort": config.ports.ingress,
    }
    assert app_after in container(patched, "app")["ports"]
    if "name" not in app_after:
        assert "has no name" in answer["response"]["warnings"][0]


# --- refusals: the pod asked, but cannot be injected safely ------------------------------------

REFUSALS = [
    (
        "ambiguous port",
        make_pod(
            containers=[
                app_container(
                    ports=[{"name": "a", "containerPort": 1}, {"name": "b", "containerPort": 2}]
                )
            ]
        ),
        "cannot tell which port to protect",
    ),
    (
        "unknown app-port",
        make_pod(annotations={"ztauthz.dev/app-port": "grpc"}),
        "names no single TCP port",
    ),
    (
        "port clash",
        make_pod(
            containers=[
                app_container(),
                {"name": "metrics", "image": "m", "ports": [{"containerPort": 9000}]},
            ]
        ),
        "port 9000 is used by the pod and by the sidecars",
    ),
    (
        "reserved port name",
        make_pod(
            containers=[
                app_container(),
                {
                    "name": "x",
                    "image": "x",
                    "ports": [{"name": "envoy-health", "containerPort": 7}],
                },
            ]
        ),
        "port name 'envoy-health' is reserved",
    ),
    (
        "volume clash",
        make_pod(volumes=[{"name": "ztauthz-tmp", "emptyDir": {}}]),
        "reserved for the sidecars",
    ),
    ("host network", make_pod(hostNetwork=True), "hostNetwork pods cannot be injected"),
    (
        "init container with the sidecar's name",
        make_pod(initContainers=[{"name": "ztauthz", "image": "busybox"}]),
        "the pod's initContainers has a container named 'ztauthz'",
    ),
    (
        "init container with envoy's name",
        make_pod(initContainers=[{"name": "ztauthz-envoy", "image": "busybox"}]),
        "the pod's initContainers has a container named 'ztauthz-envoy'",
    ),
    (
        "ephemeral container with the sidecar's name",
        make_pod(ephemeralContainers=[{"name": "ztauthz", "image": "busybox"}]),
        "the pod's ephemeralContainers has a container named 'ztauthz'",
    ),
    (
        "both sidecars, one of them also an init container",
        make_pod(
            containers=[
                app_container(),
                {"name": "ztauthz", "image": "z"},
                {"name": "ztauthz-envoy", "image": "e"},
            ],
            initContainers=[{"name": "ztauthz", "image": "busybox"}],
        ),
        "a container named 'ztauthz'",
    ),
    (
        "the app port's name on another port too",
        make_pod(
            annotations={"ztauthz.dev/app-port": "8080"},
            containers=[
                app_container(),
                {"name": "x", "image": "x", "ports": [{"name": "http", "containerPort": 81}]},
            ],
        ),
        "port name 'http' is used by more than one port of the pod",
    ),
    (
        "ephemeral containers not a list",
        make_pod(ephemeralContainers={"name": "x"}),
        "spec.ephemeralContainers is not a list of objects",
    ),
    (
        "renamed port taken",
        make_pod(
            containers=[
                app_container(
                    ports=[
                        {"name": "http", "containerPort": 8080},
                        {"name": "app-http", "containerPort": 8081},
                    ]
                )
            ]
        ),
        "cannot rename port 'http' to 'app-http'",
    ),
    (
        "half injected",
        make_pod(containers=[app_container(), {"name": ZTAUTHZ, "image": "z"}]),
        "but not the other sidecar",
    ),
    (
        "status by hand",
        make_pod(annotations={STATUS: INJECTED}),
        "has no sidecars",
    ),
    (
        "bad configmap name",
        make_pod(annotations={"ztauthz.dev/config-map": "Not_Valid"}),
        "is not a valid ConfigMap name",
    ),
]


@pytest.mark.parametrize(
    ("pod", "message"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS]
)
def test_pods_that_cannot_be_injected_safely_are_refused(
    config: InjectorConfig, pod: dict[str, Any], message: str
) -> None:
    response = mutate(make_review(pod), config, namespace_opted_in=True)["response"]
    assert response["allowed"] is False
    assert "patch" not in response
    assert response["status"]["code"] in (400, 422)
    assert message in response["status"]["message"]
    assert response["status"]["message"].startswith("ztauthz injector: ")


def test_config_map_annotations_choose_the_mounted_config_maps(config: InjectorConfig) -> None:
    pod = make_pod(
        annotations={
            "ztauthz.dev/config-map": "invoices-authz",
            "ztauthz.dev/policies-config-map": "invoices-policies",
        }
    )
    patched = apply_answer(pod, mutate(make_review(pod), config, namespace_opted_in=True))
    volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
    assert volumes["ztauthz-config"]["configMap"] == {"name": "invoices-authz"}
    assert volumes["ztauthz-policies"]["configMap"] == {"name": "invoices-policies"}


# --- not for us, or malformed ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "sub_resource"), [("UPDATE", None), ("DELETE", None), ("CREATE", "binding")]
)
def test_other_operations_pass_untouched(
    config: InjectorConfig, operation: str, sub_resource: str | None
) -> None:
    review = make_review(make_pod(), operation=operation, sub_resource=sub_resource)
    response = mutate(review, config, namespace_opted_in=True)["response"]
    assert response == {"uid": review["request"]["uid"], "allowed": True}


MALFORMED_REVIEWS: list[tuple[str, Any, str]] = [
    ("not an object", [1, 2], "expected a JSON object"),
    (
        "old api version",
        {**make_review(make_pod()), "apiVersion": "admission.k8s.io/v1beta1"},
        "expected apiVersion 'admission.k8s.io/v1'",
    ),
    ("no request", {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "no request"),
    (
        "no uid",
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"kind": {"group": "", "version": "v1", "kind": "Pod"}},
        },
        "request.uid is missing",
    ),
]


@pytest.mark.parametrize(
    ("review", "message"), [c[1:] for c in MALFORMED_REVIEWS], ids=[c[0] for c in MALFORMED_REVIEWS]
)
def test_reviews_without_a_request_to_answer_raise(
    config: InjectorConfig, review: Any, message: str
) -> None:
    with pytest.raises(MalformedReview, match=message):
        mutate(review, config)


MALFORMED_OBJECTS: list[tuple[str, Any, str]] = [
    ("no object", None, "request.object is missing"),
    ("no spec", {"metadata": {}}, "has no spec"),
    ("containers not a list", {"spec": {"containers": {"a": 1}}}, "spec.containers is not a list"),
    ("no containers", {"spec": {"containers": []}}, "spec.containers is empty"),
    (
        "bad ports",
        {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": "80"}]}]}},
        "malformed ports",
    ),
    (
        "annotations not strings",
        {"metadata": {"annotations": {"a": 1}}, "spec": {"containers": [{"name": "a"}]}},
        "metadata.annotations is not a map of strings",
    ),
]


@pytest.mark.parametrize(
    ("pod", "message"), [c[1:] for c in MALFORMED_OBJECTS], ids=[c[0] for c in MALFORMED_OBJECTS]
)
def test_malformed_pods_are_refused_with_a_clear_message(
    config: InjectorConfig, pod: Any, message: str
) -> None:
    response = mutate(make_review(pod), config, namespace_opted_in=True)["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert "malformed AdmissionReview" in response["status"]["message"]
    assert message in response["status"]["message"]


def test_a_review_of_another_kind_is_refused(config: InjectorConfig) -> None:
    review = make_review({"metadata": {}, "spec": {}}, kind="Service")
    response = mutate(review, config, namespace_opted_in=True)["response"]
    assert response["allowed"] is False
    assert "expected a core/v1 Pod" in response["status"]["message"]


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("http", True),
        ("app-http", True),
        ("a", True),
        ("8080", False),  # needs a letter
        ("app--x", False),
        ("-app", False),
        ("app-", False),
        ("App", False),
        ("abcdefghijklmnop", False),  # 16 characters
    ],
)
def test_port_name_rules(name: str, valid: bool) -> None:
    assert valid_port_name(name) is valid
