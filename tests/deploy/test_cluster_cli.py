"""`audiomemory cluster status`: pods grouped per service, and each ready replica's real Describe.

No API server can run here, so the Kubernetes side is the client's own model
objects (what `list_namespaced_*` returns); the gRPC side is real: a tiny
generator service stands in for a pod at 127.0.0.1.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner
from kubernetes.client import (
    V1Container,
    V1ContainerPort,
    V1ContainerStatus,
    V1Deployment,
    V1DeploymentSpec,
    V1DeploymentStatus,
    V1LabelSelector,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
    V1PodTemplateSpec,
)

from audiomemory.cli.cluster import cluster, describe_pods, render, summarize
from audiomemory.generator.backends import GeneratorBackend
from audiomemory.runtime.service import RunningService, start_service


def deployment(name: str, image: str, replicas: int, ready: int) -> V1Deployment:
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "audiomemory"}
    return V1Deployment(
        metadata=V1ObjectMeta(name=name, labels=labels),
        spec=V1DeploymentSpec(
            replicas=replicas,
            selector=V1LabelSelector(match_labels={"app.kubernetes.io/name": name}),
            template=V1PodTemplateSpec(
                metadata=V1ObjectMeta(labels=labels),
                spec=V1PodSpec(containers=[V1Container(name=name, image=image)]),
            ),
        ),
        status=V1DeploymentStatus(ready_replicas=ready, updated_replicas=replicas),
    )


def pod(service: str, name: str, image: str, *, ready: bool, ip: str, port: int, restarts: int = 0) -> V1Pod:
    return V1Pod(
        metadata=V1ObjectMeta(name=name, labels={"app.kubernetes.io/name": service}),
        spec=V1PodSpec(
            node_name="gpu-node-1",
            containers=[
                V1Container(
                    name=service,
                    image=image,
                    ports=[
                        V1ContainerPort(name="grpc", container_port=port),
                        V1ContainerPort(name="metrics", container_port=9090),
                    ],
                )
            ],
        ),
        status=V1PodStatus(
            phase="Running" if ready else "Pending",
            pod_ip=ip,
            container_statuses=[
                V1ContainerStatus(name=service, image=image, image_id="", ready=ready, restart_count=restarts)
            ],
        ),
    )


@pytest.fixture(scope="module")
def generator_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    from audiomemory.stack import definition

    d = definition("generator")
    backend = d.config_class().backend
    tiny = d.make_backend_class(backend).write_tiny(tmp_path_factory.mktemp("tiny") / "generator")
    service = start_service(d, d.config_class(port=0, backend=backend, torch_threads=1, **tiny), wait=True)
    yield service
    service.stop(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_groups_pods_under_their_deployment_and_describes_ready_ones(
    generator_replica: RunningService,
) -> None:
    image = "audiomemory/generator:0.1.0-cuda"
    deployments = [
        deployment("separator", "audiomemory/separator:0.1.0-cuda", 1, 0),
        deployment("generator", image, 3, 2),
    ]
    pods = [
        pod("generator", "generator-a", image, ready=True, ip="127.0.0.1", port=generator_replica.port),
        # Ready, but nothing answers there: the error is reported on its line, the others still print.
        pod(
            "generator", "generator-b", "audiomemory/generator:0.2.0-cuda", ready=True, ip="127.0.0.1", port=free_port()
        ),
        pod("generator", "generator-c", image, ready=False, ip="", port=50051, restarts=2),
        pod("separator", "separator-a", "audiomemory/separator:0.1.0-cuda", ready=False, ip="10.0.0.9", port=50051),
    ]
    services = summarize(deployments, pods)
    assert [s.name for s in services] == ["generator", "separator"]
    generator, separator = services
    assert (generator.desired, generator.ready) == (3, 2)
    assert [p.name for p in generator.pods] == ["generator-a", "generator-b", "generator-c"]
    assert [p.name for p in separator.pods] == ["separator-a"]

    describe_pods(services)
    a, b, c = generator.pods
    assert a.describe is not None
    expected = generator_replica.backend.describe().to_proto("generator")  # as it leaves the replica
    assert a.describe["model"]["backend"] == expected.backend
    assert a.describe["model"]["model_id"] == expected.model_id
    assert a.describe["cross_attention_dim"] == cast(GeneratorBackend, generator_replica.backend).cross_attention_dim
    assert b.describe is None and b.describe_error and "UNAVAILABLE" in b.describe_error
    assert c.describe is None and c.describe_error is None  # not ready: not dialled

    table = render(services)
    assert "generator      2/3 ready" in table
    assert f"{expected.backend}/{expected.model_id}" in table
    assert "image=audiomemory/generator:0.2.0-cuda" in table  # a replica on another image stands out
    assert "restarts=2" in table and "describe failed" in table


def test_status_without_a_cluster_fails_with_one_clear_line(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = CliRunner().invoke(cluster, ["status"])
    assert result.exit_code == 1
    assert "cannot reach the cluster" in result.output
    assert "Traceback" not in result.output
