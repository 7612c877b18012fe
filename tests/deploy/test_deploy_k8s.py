"""Kubernetes manifests: schema validation (no cluster) plus the operational rules we promise.

Core kinds are validated with kubernetes-validate (offline schemas, strict: unknown fields fail);
ServiceMonitor and PrometheusRule, Prometheus Operator CRDs, against the schema subsets in deploy/k8s/schemas/.
Overlays are rendered with the kustomize built into kubectl when it is on PATH; every plain
manifest file is validated on its own either way.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support import ROOT

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
K8S_VERSION = kubernetes_validate.latest_version()
SERVICE_MONITOR_SCHEMA = json.loads((K8S / "schemas" / "servicemonitor.monitoring.coreos.com-v1.json").read_text())
PROMETHEUS_RULE_SCHEMA = json.loads((K8S / "schemas" / "prometheusrule.monitoring.coreos.com-v1.json").read_text())
NOT_RESOURCES = {"kustomization.yaml"}
RECOMMENDED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of")


def validate(doc: dict[str, Any]) -> None:
    if doc.get("kind") == "ServiceMonitor":
        jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
    elif doc.get("kind") == "PrometheusRule":
        jsonschema.validate(doc, PROMETHEUS_RULE_SCHEMA)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def manifest_files() -> list[Path]:
    files = [p for p in K8S.rglob("*.yaml") if p.name not in NOT_RESOURCES and "config" not in p.parent.name]
    return sorted(files)


def render(overlay: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with built-in kustomize) not on PATH; per-file validation still runs")
    out = subprocess.run([kubectl, "kustomize", str(overlay)], check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], d["spec"]["template"]) for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_is_schema_valid(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path} holds no resource"
    for doc in docs:
        validate(doc)


def test_validator_is_strict() -> None:
    """The checks above mean something only if a misspelt field or a bad value fails."""
    good = yaml.safe_load((K8S / "base" / "gateway-deployment.yaml").read_text())
    validate(good)
    typo = copy.deepcopy(good)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProb"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(typo)
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(wrong_type)
    monitor = yaml.safe_load((K8S / "base" / "servicemonitor.yaml").read_text())
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    rules = yaml.safe_load((K8S / "base" / "prometheusrule.yaml").read_text())
    validate(rules)
    misspelt = copy.deepcopy(rules)
    misspelt["spec"]["groups"][-1]["rules"][0]["for_"] = "5m"
    with pytest.raises(jsonschema.ValidationError):
        validate(misspelt)
    bad_duration = copy.deepcopy(rules)
    bad_duration["spec"]["groups"][-1]["rules"][0]["for"] = "5 minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad_duration)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_rendered_overlay_is_schema_valid(overlay: Path) -> None:
    docs = render(overlay)
    for doc in docs:
        validate(doc)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor",
            "PrometheusRule"} <= kinds
    assert {"ConfigMap", "Secret", "ServiceAccount"} <= kinds
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert len(namespaces) == 1 and None not in namespaces, f"resources spread over {namespaces}"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_pods_are_hardened_probed_and_labelled(overlay: Path) -> None:
    docs = render(overlay)
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        if doc["kind"] != "Namespace":
            missing = [k for k in RECOMMENDED_LABELS if k not in labels]
            assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"
    for name, template in pod_specs(docs):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name
            assert "readinessProbe" in container and "livenessProbe" in container, name
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{name}: unpinned {image}"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_gateway_probes_and_wiring(overlay: Path) -> None:
    docs = render(overlay)
    (gateway,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "weaver-gateway"]
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert selects(gateway["spec"]["selector"]["matchLabels"], pod_labels)

    services = [s for s in by_kind(docs, "Service") if selects(s["spec"]["selector"], pod_labels)]
    assert services, "no Service selects the gateway pods"
    port_names = {p["name"] for p in container["ports"]}
    assert all(p["targetPort"] in port_names for s in services for p in s["spec"]["ports"])

    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "weaver-gateway"}
    assert hpa["spec"]["minReplicas"] >= 2, "a PDB over a single replica blocks node drains"
    budgets = by_kind(docs, "PodDisruptionBudget")
    pdbs = [p for p in budgets if selects(p["spec"]["selector"]["matchLabels"], pod_labels)]
    assert len(pdbs) == 1

    volumes = gateway["spec"]["template"]["spec"]["volumes"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    (keys_volume,) = [v for v in volumes if "secret" in v]
    assert keys_volume["secret"]["secretName"] in secrets
    config_maps = {c["metadata"]["name"]: c for c in by_kind(docs, "ConfigMap")}
    config_volumes = [v["configMap"]["name"] for v in volumes if "configMap" in v]
    assert set(config_volumes) <= set(config_maps), "kustomize did not rewrite the hashed ConfigMap name"

    # the settings file the gateway is started with must exist in its ConfigMap and load
    config_path = container["args"][container["args"].index("--config") + 1]
    (config_map,) = [config_maps[name] for name in config_volumes]
    assert config_path == f"{mounts['config']}/gateway.yaml" and "gateway.yaml" in config_map["data"]
    settings = yaml.safe_load(config_map["data"]["gateway.yaml"])
    assert settings["api_keys_file"].startswith(mounts[keys_volume["name"]] + "/")
    key_file = settings["api_keys_file"].rsplit("/", 1)[1]
    assert key_file in secrets[keys_volume["secret"]["secretName"]]["stringData"]
    assert settings["port"] == container["ports"][0]["containerPort"]
    assert settings["queue"]["shutdown_grace_s"] < gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert not settings["protect_ops_endpoints"], "kubelet probes carry no API key"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_service_monitors_point_at_named_ports(overlay: Path) -> None:
    docs = render(overlay)
    services = by_kind(docs, "Service")
    for monitor in by_kind(docs, "ServiceMonitor"):
        matched = [s for s in services if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert matched, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        ports = {p["name"] for s in matched for p in s["spec"]["ports"]}
        assert all(e["port"] in ports for e in monitor["spec"]["endpoints"])


def test_distributed_overlay_has_redis_and_gpu_worker() -> None:
    docs = render(K8S / "overlays" / "gpu-production")
    (redis,) = by_kind(docs, "StatefulSet")
    assert redis["spec"]["volumeClaimTemplates"], "Redis must persist the job stream"
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction", "evicting stream entries loses jobs"
    assert args[args.index("--appendonly") + 1] == "yes"

    (worker,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "weaver-worker"]
    pod = worker["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims <= {p["metadata"]["name"] for p in by_kind(docs, "PersistentVolumeClaim")}
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"]), "vLLM needs /dev/shm"

    config_maps = by_kind(docs, "ConfigMap")
    worker_config = next(c for c in config_maps if c["metadata"]["name"].startswith("weaver-worker-config"))
    config = yaml.safe_load(worker_config["data"]["worker.yaml"])
    assert config["generation"]["backend"] == "vllm"
    assert 0 < config["generation"]["gpu_memory_utilization"] < 1

    (gateway,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "weaver-gateway"]
    gateway_args = gateway["spec"]["template"]["spec"]["containers"][0]["args"]
    redis_url = gateway_args[gateway_args.index("--redis-url") + 1]
    assert redis_url.startswith("redis://weaver-redis:")
    assert redis_url in container["args"], "gateway and workers must share one stream"


def test_sidecar_overlay_serves_large_verifiers_from_their_own_vllm_servers() -> None:
    """Each `remote` verifier of the sidecar config has a hardened, probed vLLM sidecar on its port and GPUs."""
    docs = render(K8S / "overlays" / "gpu-sidecars")
    (worker,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "weaver-worker"]
    pod = worker["spec"]["template"]["spec"]
    sidecars = {c["name"]: c for c in pod["initContainers"]}
    worker_config = next(c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("weaver-worker-"))
    config = yaml.safe_load(worker_config["data"]["worker.yaml"])
    remotes = [v for v in config["verifiers"] if v["type"] == "remote"]
    assert len(remotes) == len(sidecars) >= 2
    ports = {str(c["args"][c["args"].index("--port") + 1]): c for c in sidecars.values()}
    for spec in remotes:
        port = spec["params"]["base_url"].split(":")[-1].split("/")[0]
        sidecar = ports[port]
        assert sidecar["restartPolicy"] == "Always" and sidecar["command"] == ["vllm", "serve"]
        assert sidecar["args"][0] == spec["params"]["model"]  # serves the model the verifier names
        assert int(sidecar["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        sc = sidecar["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(sidecar)
        image = sidecar["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")
    pooling = [c for c in sidecars.values() if "--runner" in c["args"]]
    assert all(c["args"][c["args"].index("--runner") + 1] == "pooling" for c in pooling) and pooling
    # the in-process engines on the worker's own GPU fit its budget
    shares = [config["generation"]["gpu_memory_utilization"]] + [
        v["params"]["gpu_memory_utilization"] for v in config["verifiers"]
        if v["type"] in ("vllm_reward", "vllm_judge")]
    assert sum(shares) <= config["gpu_memory_budget"]


CONFIGS = [
    K8S / "base" / "config" / "worker-cpu.yaml",
    K8S / "components" / "distributed" / "config" / "worker-gpu.yaml",
    K8S / "components" / "vllm-sidecars" / "config" / "worker-gpu-sidecars.yaml",
]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_worker_configs_build_every_verifier_and_the_generator_settings(path: Path) -> None:
    """Constructing (not loading) each verifier validates its params; the generation block must
    validate against its backend's settings model (unknown keys are rejected there)."""
    from workers.config import WorkerConfig
    from workers.verifiers import build_verifier

    config = WorkerConfig.from_yaml(path)
    for spec in config.verifiers:
        build_verifier(spec)
    assert config.default_profile is not None and "cheap" in config.profiles
    assert config.generation is not None
    generation = dict(config.generation)
    if generation["backend"] == "vllm":
        from workers.generation.vllm_backend import VLLMSettings as Settings
    else:
        from workers.generation.transformers_backend import TransformersSettings as Settings  # type: ignore[assignment]
    Settings.model_validate(generation)


def test_kubernetes_cpu_worker_config_is_the_embedded_default_without_code_tests() -> None:
    """deploy/k8s keeps a copy (kustomize reads no files outside its tree): it must not drift. The one difference:
    code_tests is left out, because the pods' RuntimeDefault seccomp profile forbids the user namespaces its
    bubblewrap sandbox needs (it would refuse to load and keep the pod unready; docs/security.md)."""
    from workers.config import DEFAULT_CONFIG_PATH

    default = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    default["verifiers"] = [v for v in default["verifiers"] if v["type"] != "code_tests"]
    default["profiles"] = {k: v for k, v in default["profiles"].items() if "code_tests" not in v}
    copy_ = yaml.safe_load((K8S / "base" / "config" / "worker-cpu.yaml").read_text())
    assert copy_ == default, (
        "workers/default_config.yaml changed: copy it to deploy/k8s/base/config/worker-cpu.yaml (without code_tests)"
    )


@pytest.mark.parametrize("config", ["base/config/worker-cpu.yaml", "components/distributed/config/worker-gpu.yaml"])
def test_kubernetes_worker_configs_leave_out_the_sandboxed_verifier(config: str) -> None:
    """With RuntimeDefault seccomp on every pod, a code_tests verifier could only refuse to load."""
    worker = yaml.safe_load((K8S / config).read_text())
    assert all(v["type"] != "code_tests" for v in worker["verifiers"])


def test_gateway_config_loads_with_the_service_settings() -> None:
    from service.settings import load_settings

    settings = load_settings(K8S / "base" / "config" / "gateway.yaml")
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert settings.mode == "embedded"
    assert str(settings.worker_config) == "/etc/weaver/worker.yaml"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_container_args_are_valid_weaver_commands(overlay: Path) -> None:
    from typer.main import get_command

    from service import cli

    commands = get_command(cli.app).commands  # type: ignore[attr-defined]
    for doc in by_kind(render(overlay), "Deployment"):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            args = container["args"]
            assert args[0] in commands, f"{doc['metadata']['name']}: no `weaver {args[0]}`"
            options = {opt for param in commands[args[0]].params for opt in param.opts}
            unknown = [a for a in args[1:] if a.startswith("--") and a not in options]
            assert not unknown, f"{doc['metadata']['name']}: `weaver {args[0]}` has no {unknown}"
