"""serving/k8s: valid manifests with a GPU request, probes on real routes, the model URI as a parameter;
the Triton InferenceService serves the repository cyclegan export writes, on a GPU."""
from __future__ import annotations

import shlex

import pytest
import yaml

from helpers import ROOT

K8S = ROOT / "serving" / "k8s"
PORT = 8080


def documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict]:
    return [d for d in documents() if d["kind"] == kind]


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of the real app, built without a model."""
    from serving.app import create_app

    routes = set()
    for route in create_app({}).routes:
        for method in getattr(route, "methods", None) or ():
            routes.add((method, route.path))
    return routes


def custom_predictors() -> list[dict]:
    """InferenceServices running our own container (``cyclegan serve``)."""
    return [d for d in by_kind("InferenceService") if "containers" in d["spec"]["predictor"]]


def triton_predictors() -> list[dict]:
    """InferenceServices running KServe's Triton runtime."""
    return [d for d in by_kind("InferenceService") if "model" in d["spec"]["predictor"]]


def containers() -> list[dict]:
    out = [d["spec"]["template"]["spec"]["containers"][0] for d in by_kind("Deployment")]
    out += [d["spec"]["predictor"]["containers"][0] for d in custom_predictors()]
    return out


def test_both_shapes_are_present():
    assert {d["kind"] for d in documents()} == {"Deployment", "Service", "InferenceService"}


@pytest.mark.parametrize("kind", ["Deployment", "Service"])
def test_builtin_kinds_validate_against_the_kubernetes_schema(kind):
    import kubernetes_validate

    for doc in by_kind(kind):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_inference_service_structure():
    (isvc,) = custom_predictors()
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["metadata"]["name"]
    predictor = isvc["spec"]["predictor"]
    assert set(predictor) <= {"minReplicas", "maxReplicas", "containers", "tolerations", "nodeSelector",
                              "serviceAccountName", "scaleMetric", "scaleTarget"}
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"   # the name KServe expects for a custom predictor
    assert [p["containerPort"] for p in container["ports"]] == [PORT]   # Knative routes to exactly one port
    assert isinstance(predictor["minReplicas"], int) and predictor["maxReplicas"] >= predictor["minReplicas"]


@pytest.mark.parametrize("index", [0, 1], ids=["Deployment", "InferenceService"])
def test_gpu_request_probes_and_model_parameter(index):
    container = containers()[index]
    routes = app_routes()
    resources = container["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) == 1
    assert int(resources["requests"]["nvidia.com/gpu"]) == 1
    probes = {k: v for k, v in container.items() if k.endswith("Probe")}
    assert probes["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in probes.values():
        assert ("GET", probe["httpGet"]["path"]) in routes
        assert probe["httpGet"]["port"] in (PORT, "http")
    # the model URI comes from one env var, expanded by Kubernetes into the real CLI's arguments
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODEL_URI"].startswith("models:/")
    args = [a.replace("$(MODEL_URI)", env["MODEL_URI"]) for a in container["args"]]
    assert "$(MODEL_URI)" in container["args"]
    from training.cli import build_parser

    parsed = build_parser().parse_args(args)
    assert parsed.command == "serve" and parsed.model == env["MODEL_URI"]
    assert parsed.host == "0.0.0.0" and parsed.port == PORT and parsed.provider == "cuda", shlex.join(args)


def test_service_selects_the_deployment():
    (deployment,) = by_kind("Deployment")
    (service,) = by_kind("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    # the grace period outlasts the server's own drain time (serve.graceful_timeout_s)
    from serving.config import ServeConfig

    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > ServeConfig().graceful_timeout_s


def test_triton_inference_service_serves_the_exported_repository_on_a_gpu():
    """The KServe Triton runtime's model spec: format triton, protocol v2, a storageUri ending at
    the repository folder the registered version carries (artifacts/triton), one GPU."""
    import kubernetes_validate

    from training.layout import Export

    (isvc,) = triton_predictors()
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["metadata"]["name"]
    assert len(by_kind("InferenceService")) == 2, "the custom-container service stays beside it"
    predictor = isvc["spec"]["predictor"]
    assert set(predictor) <= {"minReplicas", "maxReplicas", "model", "tolerations", "nodeSelector",
                              "serviceAccountName", "scaleMetric", "scaleTarget"}
    assert isinstance(predictor["minReplicas"], int) and predictor["maxReplicas"] >= predictor["minReplicas"]
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "triton"}
    assert model["runtime"] == "kserve-tritonserver" and model["protocolVersion"] == "v2"
    assert model["storageUri"].startswith(("s3://", "gs://")), "an address KServe's storage initializer reads"
    assert model["storageUri"].endswith(f"/artifacts/{Export('.').triton.name}")
    resources = model["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) == 1 and int(resources["requests"]["nvidia.com/gpu"]) == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in predictor["tolerations"]
    # the model spec is a container spec to KServe: its resources must be valid as one
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
           "spec": {"containers": [{"name": "kserve-container", "image": "tritonserver", "resources": resources}]}}
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
