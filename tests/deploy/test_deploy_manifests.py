"""The kustomize overlays render, validate against the Kubernetes schema and mean what DESIGN §7 says.

Every overlay is rendered with kustomize, every object validated strictly with
kubernetes-validate against the newest Kubernetes it knows, then the semantics
are read back from the rendered objects (not from the source files): the
orchestrator reaches every generator pod through a headless Service with a
round_robin + retry service config, probes hit the gRPC port the service
binds, every container is locked down and bounded, and the NetworkPolicies let
only the orchestrator call the model services.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from audiomemory.bench.song import CPU_DEPLOYMENT
from audiomemory.orchestrator.config import DEFAULT_SERVICE_CONFIG

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
OVERLAYS = ("gpu", "cpu")  # also in conftest.py, which renders them

MODEL_SERVICES = {
    # Deployment name -> the `audiomemory serve` kind and its env prefix.
    "separator": "separator",
    "audio-encoder": "audio_encoder",
    "text-encoder": "text_encoder",
    "generator": "generator",
    "transcriber": "transcriber",
}
ALL_SERVICES = {**MODEL_SERVICES, "orchestrator": "orchestrator"}
GRPC_PORT = 50051
METRICS_PORT = 9090
HEALTH_PORT = 8081  # plaintext grpc.health.v1 only, for kubelet's probes (the gRPC port speaks TLS)
CERT_MANAGER = "cert-manager.io/v1"  # not in Kubernetes' own schema: checked by what they must say

Obj = dict[str, Any]


# ---------------------------------------------------------------- helpers


def objects(docs: list[Obj], kind: str) -> dict[str, Obj]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def one(docs: list[Obj], kind: str, name: str) -> Obj:
    found = objects(docs, kind)
    assert name in found, f"no {kind} named {name}; have {sorted(found)}"
    return found[name]


def pod_templates(docs: list[Obj]) -> Iterator[tuple[str, Obj]]:
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]


def all_containers(pod_spec: Obj) -> list[Obj]:
    return list(pod_spec.get("initContainers", [])) + list(pod_spec["containers"])


def container_env(docs: list[Obj], container: Obj) -> dict[str, str]:
    """The environment a container sees: envFrom ConfigMaps first, then env (which wins)."""
    configmaps = objects(docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom names ConfigMap {name}, which is not rendered"
        env.update(configmaps[name]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item["value"]
    return env


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and labels.get(key) in values)
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


def peer_matches(peers: list[Obj] | None, labels: Mapping[str, str], ns_labels: Mapping[str, str]) -> bool:
    if not peers:  # no `from`/`to`: every peer
        return True
    for peer in peers:
        if "ipBlock" in peer:
            continue  # only pod-to-pod traffic is modelled here
        ns_ok = (
            selector_matches(peer["namespaceSelector"], ns_labels)
            if "namespaceSelector" in peer
            else (ns_labels.get("kubernetes.io/metadata.name") == "audiomemory")
        )
        pod_ok = selector_matches(peer["podSelector"], labels) if "podSelector" in peer else True
        if ns_ok and pod_ok:
            return True
    return False


def port_matches(ports: list[Obj] | None, port: int) -> bool:
    return not ports or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)


def traffic_allowed(
    docs: list[Obj],
    source: Mapping[str, str],
    target: Mapping[str, str],
    port: int,
    source_namespace: Mapping[str, str] | None = None,
) -> bool:
    """NetworkPolicy semantics for TCP `source pod -> target pod:port` (target in our namespace).

    Allowed iff the source's egress allows it and the target's ingress allows it;
    a direction with no policy selecting the pod is open.
    """
    own_ns = {"kubernetes.io/metadata.name": "audiomemory"}
    source_ns = source_namespace or own_ns
    policies = list(objects(docs, "NetworkPolicy").values())

    def direction_allows(
        kind: str, pod: Mapping[str, str], peer: Mapping[str, str], peer_ns: Mapping[str, str]
    ) -> bool:
        key = "from" if kind == "Ingress" else "to"
        selecting = [
            p
            for p in policies
            if kind in p["spec"].get("policyTypes", ["Ingress"]) and selector_matches(p["spec"]["podSelector"], pod)
        ]
        if not selecting:
            return True
        return any(
            peer_matches(rule.get(key), peer, peer_ns) and port_matches(rule.get("ports"), port)
            for p in selecting
            for rule in p["spec"].get(kind.lower(), [])
        )

    egress_ok = source_namespace is not None or direction_allows("Egress", source, target, own_ns)
    return egress_ok and direction_allows("Ingress", target, source, source_ns)


def pod_labels(docs: list[Obj], kind: str, name: str) -> dict[str, str]:
    return dict(one(docs, kind, name)["spec"]["template"]["metadata"]["labels"])


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def docs(rendered: dict[str, list[Obj]], overlay: str) -> list[Obj]:
    return rendered[overlay]


# ---------------------------------------------------------------- schema


def test_every_rendered_object_validates_strictly_against_current_kubernetes(docs: list[Obj]) -> None:
    version = kubernetes_validate.latest_version()
    major, minor = (int(x) for x in version.split(".")[:2])
    assert (major, minor) >= (1, 33), f"kubernetes-validate only knows {version}; want a current release"
    assert len(docs) >= 20
    for doc in docs:
        if doc["apiVersion"] == CERT_MANAGER:
            assert doc["kind"] in ("Issuer", "Certificate") and doc["spec"], doc["metadata"]["name"]
            continue
        # Raises ValidationError naming the field on any schema violation or unknown property.
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    """Guard against a validator that passes everything."""
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 1}], "clusterIp": "None"},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


def test_everything_lands_in_the_audiomemory_namespace(docs: list[Obj]) -> None:
    one(docs, "Namespace", "audiomemory")
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "audiomemory", doc["metadata"]["name"]


def test_each_service_has_a_deployment_running_its_own_image_and_serve_kind(docs: list[Obj]) -> None:
    deployments = objects(docs, "Deployment")
    assert set(deployments) == set(ALL_SERVICES)
    for name, kind in ALL_SERVICES.items():
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        image, _, tag = container["image"].partition(":")
        assert image == f"audiomemory/{name}"
        assert tag and tag != "latest", f"{name} image must carry a fixed tag, got {container['image']!r}"
        assert container["command"] == ["audiomemory", "serve", kind]


# ---------------------------------------------------------------- generator tier


def test_generator_is_reached_through_a_headless_service(docs: list[Obj]) -> None:
    services = objects(docs, "Service")
    generator_pods = pod_labels(docs, "Deployment", "generator")
    fronting = [
        s for s in services.values() if selector_matches({"matchLabels": s["spec"]["selector"]}, generator_pods)
    ]
    assert [s["metadata"]["name"] for s in fronting] == ["generator-headless"]
    (svc,) = fronting
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"][0]["port"] == GRPC_PORT
    assert not svc["spec"].get("publishNotReadyAddresses", False), "DNS must hide replicas still loading"


def test_orchestrator_targets_headless_generator_with_round_robin_and_retries(docs: list[Obj]) -> None:
    (container,) = one(docs, "Deployment", "orchestrator")["spec"]["template"]["spec"]["containers"]
    env = container_env(docs, container)

    target = env["AUDIOMEMORY_ORCHESTRATOR_GENERATOR_TARGET"]
    assert target == f"dns:///generator-headless.audiomemory.svc.cluster.local:{GRPC_PORT}"
    host = target.removeprefix("dns:///").rsplit(":", 1)[0]
    service_name, namespace = host.split(".")[:2]
    assert one(docs, "Service", service_name)["spec"]["clusterIP"] == "None"
    assert namespace == one(docs, "Service", service_name)["metadata"]["namespace"]

    config = json.loads(env["AUDIOMEMORY_ORCHESTRATOR_SERVICE_CONFIG"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert {"service": "audiomemory.v1.Generator"} in method["name"]
    retry = method["retryPolicy"]
    # UNAVAILABLE: replica gone; RESOURCE_EXHAUSTED: replica's queue full; CANCELLED: a gRPC Python server
    # that shuts down cancels calls it had received but not yet handed to a handler (grpc/grpc#41785).
    # FAILED_PRECONDITION: a replica running another identity than the call pins (or whose model failed to load).
    codes = set(retry["retryableStatusCodes"])
    assert {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED", "FAILED_PRECONDITION"} <= codes
    assert 2 <= retry["maxAttempts"] <= 5  # gRPC caps attempts at 5
    for key in ("initialBackoff", "maxBackoff"):
        assert retry[key].endswith("s") and float(retry[key][:-1]) > 0
    # The cluster's copy is the orchestrator's own default (one definition; kustomize reads files of its tree only).
    assert config == json.loads(DEFAULT_SERVICE_CONFIG)


def test_every_orchestrator_target_names_a_rendered_service_on_the_grpc_port(docs: list[Obj]) -> None:
    (container,) = one(docs, "Deployment", "orchestrator")["spec"]["template"]["spec"]["containers"]
    env = container_env(docs, container)
    services = objects(docs, "Service")
    for name in MODEL_SERVICES:
        key = f"AUDIOMEMORY_ORCHESTRATOR_{MODEL_SERVICES[name].upper()}_TARGET"
        host, port = env[key].removeprefix("dns:///").rsplit(":", 1)
        svc = services[host.split(".")[0]]
        assert int(port) == svc["spec"]["ports"][0]["port"] == GRPC_PORT
        assert selector_matches({"matchLabels": svc["spec"]["selector"]}, pod_labels(docs, "Deployment", name))


def test_hpa_scales_the_generator_and_owns_its_replica_count(docs: list[Obj]) -> None:
    (hpa,) = objects(docs, "HorizontalPodAutoscaler").values()
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", "generator")
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["metrics"], "an HPA needs at least one metric"
    # A fixed count in the Deployment would reset the HPA's choice on every apply.
    assert "replicas" not in one(docs, "Deployment", "generator")["spec"]


def pdb_protects_and_lets_a_node_drain(spec: dict[str, Any], min_replicas: int) -> bool:
    """A budget that lets a node drain (at least one pod may be evicted at the HPA's minimum) and protects
    something (evictions leave a replica serving; with a single replica, one at a time is all it can say)."""
    if "maxUnavailable" in spec:
        allowed = spec["maxUnavailable"]
        if not isinstance(allowed, int):
            return False  # a percentage of one or two replicas rounds unpredictably: say a number
        return allowed == 1 or 1 <= allowed < min_replicas
    if "minAvailable" in spec:
        kept = int(spec["minAvailable"])
        return 1 <= kept < min_replicas
    return False


@pytest.mark.parametrize(
    ("spec", "ok"),
    [({"maxUnavailable": 1}, True), ({"minAvailable": 1}, True), ({"minAvailable": 0}, False),
     ({"maxUnavailable": 0}, False), ({"minAvailable": 2}, False), ({"maxUnavailable": 2}, False), ({}, False),
     ({"maxUnavailable": "50%"}, False)],
)
def test_the_pdb_rule_refuses_budgets_that_protect_nothing_or_block_drains(spec: dict[str, Any], ok: bool) -> None:
    assert pdb_protects_and_lets_a_node_drain(spec, min_replicas=2) is ok


def test_pdb_covers_the_generator_pods_and_still_lets_a_node_drain(docs: list[Obj]) -> None:
    (pdb,) = objects(docs, "PodDisruptionBudget").values()
    assert selector_matches(pdb["spec"]["selector"], pod_labels(docs, "Deployment", "generator"))
    (hpa,) = objects(docs, "HorizontalPodAutoscaler").values()
    assert pdb_protects_and_lets_a_node_drain(pdb["spec"], hpa["spec"]["minReplicas"])


# ---------------------------------------------------------------- containers


def test_probes_are_native_grpc_on_the_plaintext_health_port_the_service_binds(docs: list[Obj]) -> None:
    for name, kind in ALL_SERVICES.items():
        (container,) = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        env = container_env(docs, container)
        prefix = f"AUDIOMEMORY_{kind.upper()}_"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert env[prefix + "HOST"] == "0.0.0.0", "a pod must listen beyond loopback"
        assert int(env[prefix + "PORT"]) == ports["grpc"] == GRPC_PORT
        assert int(env[prefix + "METRICS_PORT"]) == ports["metrics"] == METRICS_PORT
        assert int(env[prefix + "HEALTH_PORT"]) == ports["health"] == HEALTH_PORT
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container[probe]
            assert set(spec) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}, f"{name} {probe}"
            assert spec["grpc"]["port"] == ports["health"], f"{name} {probe} must probe the health port"
            assert isinstance(spec["grpc"]["port"], int)


def startup_budget(probe: Obj) -> int:
    return int(probe.get("initialDelaySeconds", 0)) + int(probe["periodSeconds"]) * int(probe["failureThreshold"])


def test_startup_probes_leave_time_to_load_and_the_orchestrator_outwaits_its_models(docs: list[Obj]) -> None:
    budgets = {
        name: startup_budget(one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["startupProbe"])
        for name in ALL_SERVICES
    }
    for name in MODEL_SERVICES:
        assert budgets[name] >= 300, f"{name}: loading a model from the volume can take minutes"
    # The orchestrator reports SERVING only once every model service does: it must not be restarted first.
    assert budgets["orchestrator"] > max(budgets[name] for name in MODEL_SERVICES)


def test_termination_grace_outlasts_the_service_drain(docs: list[Obj]) -> None:
    for name, kind in ALL_SERVICES.items():
        pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        env = container_env(docs, pod["containers"][0])
        assert pod["terminationGracePeriodSeconds"] > float(env[f"AUDIOMEMORY_{kind.upper()}_GRACE_SECONDS"])


def test_every_container_is_non_root_read_only_unprivileged_and_bounded(docs: list[Obj]) -> None:
    seen = 0
    for where, template in pod_templates(docs):
        pod = template["spec"]
        pod_sc = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), where
        for c in all_containers(pod):
            seen += 1
            sc = {**pod_sc, **c.get("securityContext", {})}
            label = f"{where} container {c['name']}"
            assert sc.get("runAsNonRoot") is True, label
            assert sc.get("runAsUser", 0) >= 10000, label
            assert sc.get("allowPrivilegeEscalation") is False, label
            assert sc.get("readOnlyRootFilesystem") is True, label
            assert not sc.get("privileged", False), label
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], label
            assert not sc.get("capabilities", {}).get("add"), label
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"].get(bound, {})), f"{label} {bound}"
            # A read-only root needs somewhere writable for temp files.
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], label
            assert volumes[mounts["/tmp"]]["emptyDir"].get("sizeLimit"), label
    assert seen == 6 + 5  # six Deployments, five models-pull containers


def test_model_pods_read_weights_from_the_volume_and_only_the_pull_job_writes_it(docs: list[Obj]) -> None:
    pvc = one(docs, "PersistentVolumeClaim", "models")
    for where, template in pod_templates(docs):
        pod = template["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {n for n, v in volumes.items() if v.get("persistentVolumeClaim", {}).get("claimName") == "models"}
        is_job = where.startswith("Job/")
        is_model = template["metadata"]["labels"].get("app.kubernetes.io/component") == "model"
        if not (is_job or is_model):
            assert not claims, f"{where} must not mount the model volume"
            continue
        assert claims, f"{where} must mount the model volume"
        for c in all_containers(pod):
            env = container_env(docs, c)
            assert env["HF_HOME"] == "/models/hf" and env["TORCH_HOME"] == "/models/torch", where
            (mount,) = [m for m in c["volumeMounts"] if m["name"] in claims]
            assert mount["mountPath"] == "/models"
            assert bool(mount.get("readOnly")) is (not is_job), f"{where}: only the pull job writes weights"
            if not is_job:
                assert env.get("HF_HUB_OFFLINE") == "1", f"{where} must never download at start"
    assert pvc["spec"]["resources"]["requests"]["storage"]


def test_models_pull_job_runs_models_pull_in_every_model_image(docs: list[Obj]) -> None:
    job = one(docs, "Job", "models-pull")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    images = set()
    for c in all_containers(pod):
        image = c["image"].split(":")[0]
        # Each image holds only its own service, so each pulls only that one.
        kind = MODEL_SERVICES[image.removeprefix("audiomemory/")]
        assert c["command"] == ["audiomemory", "models", "pull", "--only", kind]
        images.add(image)
    assert images == {f"audiomemory/{name}" for name in MODEL_SERVICES}


def mounted_secret(pod: Obj, container: Obj, path: str) -> str:
    """The Secret whose volume is mounted at the folder of ``path`` in ``container``."""
    folder = str(Path(path).parent)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == folder]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert mount.get("readOnly") is True, f"{folder} must be mounted read-only"
    return str(volume["secret"]["secretName"])


def test_tls_everywhere_mtls_inside_and_tokens_at_the_front_door(docs: list[Obj]) -> None:
    certificates = {c["spec"]["secretName"]: c["spec"] for c in objects(docs, "Certificate").values()}
    for name, kind in ALL_SERVICES.items():
        pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = container_env(docs, container)
        prefix = f"AUDIOMEMORY_{kind.upper()}_"
        secret = mounted_secret(pod, container, env[prefix + "TLS_CERT"])
        assert mounted_secret(pod, container, env[prefix + "TLS_KEY"]) == secret
        assert "server auth" in certificates[secret]["usages"], f"{name}: {secret} must be a server certificate"
        if name in MODEL_SERVICES:  # only a holder of a certificate from the internal CA gets in
            assert mounted_secret(pod, container, env[prefix + "TLS_CLIENT_CA"]) == secret
    orchestrator = one(docs, "Deployment", "orchestrator")["spec"]["template"]["spec"]
    container = orchestrator["containers"][0]
    env = container_env(docs, container)
    assert mounted_secret(orchestrator, container, env["AUDIOMEMORY_ORCHESTRATOR_AUTH_TOKENS"]) == "orchestrator-tokens"
    client = mounted_secret(orchestrator, container, env["AUDIOMEMORY_ORCHESTRATOR_DOWNSTREAM_TLS_CERT"])
    assert "client auth" in certificates[client]["usages"]
    model_secret = mounted_secret(orchestrator, container, env["AUDIOMEMORY_ORCHESTRATOR_DOWNSTREAM_TLS_CA"])
    # Every target the orchestrator dials is a name on the certificate the model services present.
    for key, value in env.items():
        if key.endswith("_TARGET"):
            host = value.removeprefix("dns:///").rsplit(":", 1)[0]
            assert host in certificates[model_secret]["dnsNames"], f"{key}: {host} not on {model_secret}"


def test_the_health_port_is_open_to_probes_and_the_grpc_port_still_only_to_the_orchestrator(
    docs: list[Obj]
) -> None:
    node = {"app": "kubelet"}
    for name in ALL_SERVICES:
        assert traffic_allowed(docs, node, pod_labels(docs, "Deployment", name), HEALTH_PORT), name


# ---------------------------------------------------------------- network


def test_only_the_orchestrator_may_call_the_model_services(docs: list[Obj]) -> None:
    orchestrator = pod_labels(docs, "Deployment", "orchestrator")
    job = one(docs, "Job", "models-pull")["spec"]["template"]["metadata"]["labels"]
    outsider_ns = {"kubernetes.io/metadata.name": "default"}
    for name in MODEL_SERVICES:
        target = pod_labels(docs, "Deployment", name)
        assert traffic_allowed(docs, orchestrator, target, GRPC_PORT), f"orchestrator -> {name}"
        for other in MODEL_SERVICES:
            if other != name:
                source = pod_labels(docs, "Deployment", other)
                assert not traffic_allowed(docs, source, target, GRPC_PORT), f"{other} -> {name}"
        assert not traffic_allowed(docs, job, target, GRPC_PORT), f"models-pull -> {name}"
        assert not traffic_allowed(docs, {"app": "x"}, target, GRPC_PORT, outsider_ns), f"other ns -> {name}"


def test_clients_reach_the_orchestrator_and_scrapers_reach_metrics(docs: list[Obj]) -> None:
    orchestrator = pod_labels(docs, "Deployment", "orchestrator")
    outsider_ns = {"kubernetes.io/metadata.name": "default"}
    assert traffic_allowed(docs, {"app": "client"}, orchestrator, GRPC_PORT, outsider_ns)
    scraper_ns = {"kubernetes.io/metadata.name": "monitoring", "audiomemory.io/scrape-metrics": "true"}
    generator = pod_labels(docs, "Deployment", "generator")
    assert traffic_allowed(docs, {"app": "prometheus"}, generator, METRICS_PORT, scraper_ns)
    assert not traffic_allowed(docs, {"app": "prometheus"}, generator, METRICS_PORT, outsider_ns)


def test_model_pods_have_no_egress(docs: list[Obj]) -> None:
    generator = pod_labels(docs, "Deployment", "generator")
    separator = pod_labels(docs, "Deployment", "separator")
    orchestrator = pod_labels(docs, "Deployment", "orchestrator")
    assert not traffic_allowed(docs, generator, separator, GRPC_PORT)
    assert not traffic_allowed(docs, generator, orchestrator, GRPC_PORT)


# ---------------------------------------------------------------- overlays


def test_gpu_overlay_gives_each_model_tier_a_gpu_and_the_orchestrator_none(rendered: dict[str, list[Obj]]) -> None:
    docs = rendered["gpu"]
    for name in ALL_SERVICES:
        pod = one(docs, "Deployment", name)["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        if name in MODEL_SERVICES:
            assert c["resources"]["limits"]["nvidia.com/gpu"] == "1", name
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
            assert c["image"].endswith("-cuda"), name
        else:
            assert "nvidia.com/gpu" not in c["resources"]["limits"]
            assert "tolerations" not in pod


def test_cpu_overlay_requests_no_gpu_and_fits_one_node(rendered: dict[str, list[Obj]]) -> None:
    docs = rendered["cpu"]
    assert "nvidia.com/gpu" not in json.dumps(docs)
    assert one(docs, "PersistentVolumeClaim", "models")["spec"]["accessModes"] == ["ReadWriteOnce"]
    for name in MODEL_SERVICES:
        (c,) = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert c["image"].endswith("-cpu"), name
    # the CPU models pick their backend by the node's flags, and the pull Job (same profile) converts every
    # compiled one onto the volume; what bench-song's "new" phase runs is this profile
    profiles = {o["metadata"]["name"]: o["data"] for o in docs if o["kind"] == "ConfigMap"}
    (profile,) = [data for name, data in profiles.items() if name.startswith("model-profile")]
    backends = {k.removeprefix("AUDIOMEMORY_").removesuffix("_BACKEND").lower(): {"backend": v}
                for k, v in profile.items() if k.endswith("_BACKEND")}
    assert backends == CPU_DEPLOYMENT and profile["HF_HOME"] == "/models/hf"
    gpu = [o["data"] for o in rendered["gpu"] if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(
        "model-profile")]
    assert not [k for k in gpu[0] if k.endswith("_BACKEND")]  # CUDA: each kind's default (eager) backend


# ---------------------------------------------------------------- checkov


def run_checkov(checkov: str, tmp_path: Any, name: str, text: str, skips: list[str]) -> dict[str, Any]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    cmd = [checkov, "-f", str(path), "--framework", "kubernetes", "-o", "json", "--skip-download"]
    if skips:
        cmd += ["--skip-check", ",".join(skips)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] >= 20, "checkov did not see the manifests"
    return dict(report)


def test_checkov_passes_every_overlay_except_listed_skips(
    checkov: str, rendered_text: dict[str, str], checkov_skips: dict[str, dict[str, str]], overlay: str, tmp_path: Any
) -> None:
    listed = {**checkov_skips.get("all", {}), **checkov_skips.get(overlay, {})}
    for check, reason in listed.items():
        assert len(reason.split()) >= 8, f"skip {check} needs a real reason in deploy/checkov-skips.yaml"
    report = run_checkov(checkov, tmp_path, overlay, rendered_text[overlay], sorted(listed))
    failed = [f"{f['check_id']} {f['resource']}" for f in report["results"]["failed_checks"]]
    assert not failed, f"checkov failures on overlay {overlay}: {failed}"
    assert report["summary"]["passed"] > 100


@pytest.mark.long
def test_every_listed_checkov_skip_is_still_needed(
    checkov: str, rendered_text: dict[str, str], checkov_skips: dict[str, dict[str, str]], overlay: str, tmp_path: Any
) -> None:
    listed = {**checkov_skips.get("all", {}), **checkov_skips.get(overlay, {})}
    report = run_checkov(checkov, tmp_path, overlay, rendered_text[overlay], [])
    failing = {f["check_id"] for f in report["results"]["failed_checks"]}
    assert failing == set(listed), f"overlay {overlay}: failing {sorted(failing)} vs listed {sorted(listed)}"


def test_skips_file_lists_only_known_sections() -> None:
    data = yaml.safe_load((DEPLOY / "checkov-skips.yaml").read_text())
    assert set(data) <= {"all", "dockerfile", *OVERLAYS}
