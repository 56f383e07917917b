"""``audiomemory cluster status``: what an Audio Memory deployment on Kubernetes runs, per service and replica.

A thin layer over the official ``kubernetes`` client (``pip install 'audiomemory[cluster]'``): it lists
the Deployments and pods labelled ``app.kubernetes.io/part-of=audiomemory`` (deploy/ labels them so)
and, with ``--describe``, asks every ready pod for its gRPC ``Describe`` — which backend, model,
revision and device each replica really serves. ``--describe`` dials pod IPs, so run it where they
route: inside the cluster (``kubectl exec``/a debug pod the NetworkPolicy admits) or over a VPN;
from a laptop use ``kubectl port-forward pod/NAME 50051`` and ``audiomemory describe 127.0.0.1:50051``.

    audiomemory cluster status [-n audiomemory] [--context CTX] [--describe] [--json]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import click

PART_OF = "app.kubernetes.io/part-of=audiomemory"
NAME_LABEL = "app.kubernetes.io/name"
GRPC_PORT_NAME = "grpc"

Describer = Callable[[str], tuple[str, dict[str, Any]]]


@dataclass
class PodStatus:
    name: str
    phase: str
    ready: bool
    restarts: int
    node: str
    ip: str
    image: str
    grpc_port: int | None
    describe: dict[str, Any] | None = None
    describe_error: str | None = None

    @property
    def address(self) -> str | None:
        return f"{self.ip}:{self.grpc_port}" if self.ip and self.grpc_port else None


@dataclass
class ServiceStatus:
    name: str
    desired: int
    ready: int
    updated: int
    image: str
    pods: list[PodStatus] = field(default_factory=list)


def _grpc_port(container: Any) -> int | None:
    for port in container.ports or []:
        if port.name == GRPC_PORT_NAME:
            return int(port.container_port)
    return None


def pod_status(pod: Any) -> PodStatus:
    """One pod, from a ``V1Pod``."""
    container = pod.spec.containers[0]
    statuses = pod.status.container_statuses or []
    return PodStatus(
        name=pod.metadata.name,
        phase=pod.status.phase or "Unknown",
        ready=bool(statuses) and all(s.ready for s in statuses),
        restarts=sum(s.restart_count or 0 for s in statuses),
        node=pod.spec.node_name or "",
        ip=pod.status.pod_ip or "",
        image=container.image,
        grpc_port=_grpc_port(container),
    )


def summarize(deployments: Iterable[Any], pods: Iterable[Any]) -> list[ServiceStatus]:
    """Each Deployment with its pods (matched by the Deployment's selector), sorted by name."""
    pods = list(pods)
    out = []
    for dep in sorted(deployments, key=lambda d: d.metadata.name):
        selector = dep.spec.selector.match_labels or {}
        mine = [p for p in pods if all((p.metadata.labels or {}).get(k) == v for k, v in selector.items())]
        st = dep.status
        out.append(
            ServiceStatus(
                name=dep.metadata.name,
                desired=dep.spec.replicas if dep.spec.replicas is not None else 1,
                ready=st.ready_replicas or 0,
                updated=st.updated_replicas or 0,
                image=dep.spec.template.spec.containers[0].image,
                pods=sorted((pod_status(p) for p in mine), key=lambda p: p.name),
            )
        )
    return out


def describe_pods(services: list[ServiceStatus], describer: Describer | None = None) -> None:
    """Fill each ready pod's ``describe`` from its gRPC ``Describe`` (errors are kept, not raised)."""
    if describer is None:
        from audiomemory.cli.describe import describe_address

        def describer(address: str) -> tuple[str, dict[str, Any]]:
            return describe_address(address, timeout=5.0)

    for service in services:
        for pod in service.pods:
            if not (pod.ready and pod.address):
                continue
            try:
                _, pod.describe = describer(pod.address)
            except click.ClickException as exc:
                pod.describe_error = exc.message


def _model_line(info: dict[str, Any]) -> str:
    model = info.get("model", {})
    ident = f"{model.get('backend', '?')}/{model.get('model_id', '?')}"
    revision = model.get("revision", "")
    return f"{ident}@{revision[:12]} on {model.get('device', '?')} ({model.get('dtype', '?')})" if revision else ident


def render(services: list[ServiceStatus]) -> str:
    """A human-readable table: one line per service, one indented line per replica."""
    lines = []
    for s in services:
        lines.append(f"{s.name:14} {s.ready}/{s.desired} ready, {s.updated} up to date  {s.image}")
        for p in s.pods:
            state = "ready" if p.ready else p.phase.lower()
            line = f"  {p.name:40} {state:9} restarts={p.restarts:<3} node={p.node or '-'} ip={p.ip or '-'}"
            if p.image != s.image:
                line += f" image={p.image}"
            if p.describe is not None:
                line += f"  {_model_line(p.describe)}"
            elif p.describe_error:
                line += f"  describe failed: {p.describe_error}"
            lines.append(line)
    return "\n".join(lines)


def _load_config(context: str | None) -> None:
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(context=context)


@click.group()
def cluster() -> None:
    """Inspect Audio Memory on a Kubernetes cluster (needs the `cluster` extra)."""


@cluster.command("status")
@click.option("-n", "--namespace", default="audiomemory", show_default=True)
@click.option("--context", help="kubeconfig context (default: the current one; in a pod: in-cluster).")
@click.option("--describe", "with_describe", is_flag=True, help="Also ask every ready pod for its Describe.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(namespace: str, context: str | None, with_describe: bool, as_json: bool) -> None:
    """Each service's Deployment and its replicas (and, with --describe, the model each one serves)."""
    try:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
    except ImportError:
        raise click.ClickException("the kubernetes client is missing: pip install 'audiomemory[cluster]'") from None
    try:
        _load_config(context)
        deployments = client.AppsV1Api().list_namespaced_deployment(namespace, label_selector=PART_OF).items
        pods = client.CoreV1Api().list_namespaced_pod(namespace, label_selector=PART_OF).items
    except ApiException as exc:
        raise click.ClickException(f"Kubernetes API: {exc.status} {exc.reason}") from None
    except Exception as exc:  # kubeconfig missing/invalid, API unreachable
        raise click.ClickException(f"cannot reach the cluster: {exc}") from None
    services = summarize(deployments, pods)
    if not services:
        raise click.ClickException(f"no Audio Memory deployments in namespace {namespace!r} ({PART_OF})")
    if with_describe:
        describe_pods(services)
    if as_json:
        click.echo(json.dumps([asdict(s) for s in services], indent=2, sort_keys=True))
    else:
        click.echo(render(services))
