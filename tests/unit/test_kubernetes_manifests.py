"""deploy/kubernetes/: valid Kubernetes objects that fit the gateway they run.

Schemas come from kubernetes-validate (bundled with it: no network), checked strictly
(an unknown field is an error) against the oldest Kubernetes the manifests are for
(1.27, where the native gRPC probes are GA) and the newest the package knows. The
ConfigMap's config goes through the gateway's own parser with the Deployment's
variables set, and the Deployment is checked against that config: probe and container
ports, the drain against the termination grace, the image's user.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_service.config import ConfigError, GatewayConfig, is_loopback, parse_config, split_host_port
from ai_service.runtime.gateway import CALLS_UNWIND_SECONDS
from tests.conftest import REPO
from tests.servers import require_module

KUBERNETES = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in KUBERNETES.rglob("*.yaml") if p.name != "kustomization.yaml")
KUSTOMIZATIONS = sorted(KUBERNETES.rglob("kustomization.yaml"))
# Left out of the kustomization on purpose: an apply would put its placeholders back.
SECRET_TEMPLATE = KUBERNETES / "secret.example.yaml"
OLDEST_KUBERNETES = "1.27"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _object(kind: str, name: str) -> dict[str, Any]:
    found = [
        document
        for path in MANIFESTS
        for document in _documents(path)
        if document["kind"] == kind and document["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


DEPLOYMENT = _object("Deployment", "ai-service")
POD = DEPLOYMENT["spec"]["template"]
(CONTAINER,) = POD["spec"]["containers"]
PORTS = {port["name"]: port["containerPort"] for port in CONTAINER["ports"]}
SECRET = _object("Secret", "ai-service")
# What the Deployment takes from the Secret; the config refers to each as ${NAME}.
SECRET_VARIABLES = {
    entry["name"]: entry["valueFrom"]["secretKeyRef"]
    for entry in CONTAINER["env"]
    if "secretKeyRef" in entry.get("valueFrom", {})
}
DUMMY_ENV = {name: f"dummy-{name.lower()}" for name in SECRET_VARIABLES}


def _config(env: dict[str, str]) -> GatewayConfig:
    config_map = _object("ConfigMap", "ai-service-config")
    return parse_config(yaml.safe_load(config_map["data"]["config.yaml"]), env=env)


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "newest"])
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(KUBERNETES)))
def test_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    validator = require_module("kubernetes_validate")
    if version == "newest":
        version = validator.latest_version()
    for document in _documents(path):
        try:
            validator.validate(document, version, strict=True)
        except validator.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            kind, name = document["kind"], document["metadata"]["name"]
            pytest.fail(f"{kind} {name}, Kubernetes {version}: {where}: {error.message}")


def test_kustomizations_list_every_manifest_but_the_secret_template() -> None:
    listed: set[Path] = set()
    for kustomization in KUSTOMIZATIONS:
        tree = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
        assert tree["kind"] == "Kustomization"
        for resource in tree["resources"]:
            path = kustomization.parent / resource
            assert path.is_file(), f"{kustomization}: {resource} does not exist"
            listed.add(path)
    assert set(MANIFESTS) - listed == {SECRET_TEMPLATE}


def test_config_map_holds_a_config_the_gateway_accepts() -> None:
    config = _config(DUMMY_ENV)
    host, port = split_host_port(config.server.listen)
    assert not is_loopback(host), "the Service and the probes reach the pod on its IP"
    assert port == PORTS["grpc"]
    assert config.server.tls is None  # the mesh or the load balancer terminates TLS
    assert not any(key.is_demo for key in config.auth.keys)
    assert config.server.max_connection_age_seconds > 0  # HTTP/2 connections rebalance
    assert config.shared_state.backend == "redis"
    assert config.shared_state.redis_url == DUMMY_ENV["REDIS_URL"]
    (openai,) = config.providers
    assert openai.api_key is not None
    assert openai.api_key.get_secret_value() == DUMMY_ENV["OPENAI_API_KEY"]
    metrics_host, metrics_port = split_host_port(config.observability.metrics.listen)
    assert config.observability.metrics.enabled and not is_loopback(metrics_host)
    assert metrics_port == PORTS["metrics"]
    assert POD["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port)
    assert config.observability.audit.path is None, "the root filesystem is read-only"


@pytest.mark.parametrize("variable", sorted(SECRET_VARIABLES))
def test_config_needs_every_variable_the_deployment_sets(variable: str) -> None:
    env = {name: value for name, value in DUMMY_ENV.items() if name != variable}
    with pytest.raises(ConfigError, match=f"environment variable {variable} is not set"):
        _config(env)


def test_secret_template_has_a_placeholder_for_every_variable() -> None:
    assert {ref["name"] for ref in SECRET_VARIABLES.values()} == {SECRET["metadata"]["name"]}
    values = SECRET["stringData"]
    assert set(values) == {ref["key"] for ref in SECRET_VARIABLES.values()}
    for key, value in values.items():
        assert "REPLACE-ME" in value, f"{key}: a template holds placeholders, not secrets"


def test_probes_ask_the_grpc_health_service_of_the_whole_server() -> None:
    port = split_host_port(_config(DUMMY_ENV).server.listen)[1]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = CONTAINER[kind]
        assert probe["grpc"]["port"] == port == PORTS["grpc"], kind
        # No service name: the server as a whole, which turns NOT_SERVING on SIGTERM.
        assert probe["grpc"].get("service", "") == "", kind


def test_termination_grace_outlasts_the_drain() -> None:
    grace = _config(DUMMY_ENV).server.shutdown_grace_seconds
    command = CONTAINER["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    # The kubelet counts the preStop hook in the grace; after SIGTERM the gateway
    # drains, then lets cut calls settle for up to CALLS_UNWIND_SECONDS.
    needed = pre_stop + grace + CALLS_UNWIND_SECONDS
    assert POD["spec"]["terminationGracePeriodSeconds"] > needed > grace


def test_pod_runs_as_the_image_user_on_a_read_only_root() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    uid = re.search(r"useradd .*--uid (\d+)", dockerfile)
    assert uid is not None
    pod_security = POD["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == int(uid[1])
    security = CONTAINER["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # The config file the gateway is told to read is the ConfigMap's, mounted.
    args = CONTAINER["args"]
    config_path = args[args.index("--config") + 1]
    assert args[args.index("--workers") + 1] == "1"
    (mount,) = [m for m in CONTAINER["volumeMounts"] if m["mountPath"] == "/etc/ai-service"]
    assert posixpath.dirname(config_path) == mount["mountPath"]
    (volume,) = [v for v in POD["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "ai-service-config"
    assert posixpath.basename(config_path) in _object("ConfigMap", "ai-service-config")["data"]


def test_services_budget_and_autoscaler_find_the_gateway() -> None:
    labels = POD["metadata"]["labels"]
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"] == labels
    assert "replicas" not in DEPLOYMENT["spec"], "the autoscaler owns the replica count"
    for name in ("ai-service", "ai-service-headless"):
        service = _object("Service", name)
        assert service["spec"]["selector"] == labels
        (grpc,) = [port for port in service["spec"]["ports"] if port["name"] == "grpc"]
        assert grpc["appProtocol"] == "grpc"
        assert grpc["port"] == PORTS["grpc"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in PORTS, f"{name}: {port['targetPort']}"
    assert _object("Service", "ai-service")["spec"]["type"] == "ClusterIP"
    assert _object("Service", "ai-service-headless")["spec"]["clusterIP"] == "None"
    assert _object("PodDisruptionBudget", "ai-service")["spec"]["selector"]["matchLabels"] == labels
    autoscaler = _object("HorizontalPodAutoscaler", "ai-service")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", DEPLOYMENT["metadata"]["name"])
    assert autoscaler["spec"]["minReplicas"] >= 2, "one pod drains while another serves"
