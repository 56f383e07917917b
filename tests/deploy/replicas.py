"""Generator replicas as separate processes, the way a cluster runs them.

Each replica is `audiomemory serve generator` in its own process (own torch
threads, own GIL), configured only through `AUDIOMEMORY_GENERATOR_*` env vars
like a container, on 127.0.0.1 with an ephemeral gRPC and metrics port. Its
request counter is read from its Prometheus endpoint, as a scraper would.
`terminate()` is what the kubelet does to a pod (SIGTERM: drain in-flight
calls, refuse new ones); `kill()` is a crash (SIGKILL).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
SERVICE_CONFIG_FILE = REPO / "deploy" / "base" / "downstream-service-config.json"
_LISTENING = re.compile(r"listening on (?P<host>[\d.]+):(?P<port>\d+)(?:, metrics on :(?P<metrics>\d+))?")


def cluster_service_config() -> str:
    """The exact gRPC service config the cluster's orchestrator gets (deploy/base)."""
    return json.dumps(json.loads(SERVICE_CONFIG_FILE.read_text()))


def multi_address_target(addresses: list[str]) -> str:
    """One gRPC target naming every replica: the local stand-in for the headless Service's DNS answer."""
    return "ipv4:" + ",".join(addresses)


@dataclass
class Replica:
    proc: subprocess.Popen[str]
    log_path: Path
    port: int = 0
    metrics_port: int = 0
    _log: TextIO | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def served(self, method: str = "Generate") -> int:
        """RPCs of ``method`` this replica finished with OK, from its /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("audiomemory_requests_total{") and f'method="{method}"' in line and 'code="OK"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"replica exited with {self.proc.returncode}: {self.log_tail()}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica {self.address} not SERVING after {timeout} s: {self.log_tail()}")
                time.sleep(0.1)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.proc.kill()

    def wait_exit(self, timeout: float) -> int:
        """The exit code; a replica still running after ``timeout`` is aborted and its stacks reported."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(10)
            raise TimeoutError(
                f"replica {self.address} still running after {timeout} s: {self.log_tail(8000)}"
            ) from None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text()[-chars:]
        except OSError:
            return ""

    def close(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()


def _env(overrides: Mapping[str, Any], torch_threads: int, grace_seconds: float) -> dict[str, str]:
    env = dict(os.environ)
    settings = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "torch_threads": torch_threads,
        "grace_seconds": grace_seconds,
        "device": "cpu",
        **overrides,
    }
    for key, value in settings.items():
        env[f"AUDIOMEMORY_GENERATOR_{key.upper()}"] = str(value)
    # One thread per replica everywhere (torch, OpenMP, MKL): replicas must not share cores.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(torch_threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def start_generator_replicas(
    n: int,
    overrides: Mapping[str, Any],
    log_dir: Path,
    *,
    torch_threads: int = 1,
    grace_seconds: float = 20.0,
    timeout: float = 180.0,
) -> list[Replica]:
    """Start ``n`` replicas at once, learn their ports, wait until each reports SERVING."""
    env = _env(overrides, torch_threads, grace_seconds)
    replicas: list[Replica] = []
    try:
        for i in range(n):
            log_path = log_dir / f"generator-{i}.log"
            log = log_path.open("w")
            proc = subprocess.Popen(
                # -X faulthandler: a replica that hangs dumps every thread's stack on SIGABRT.
                [sys.executable, "-X", "faulthandler", "-m", "audiomemory.cli.main", "serve", "generator"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            replicas.append(Replica(proc, log_path, _log=log))
        for replica in replicas:
            line = _read_line(replica, timeout)
            match = _LISTENING.search(line)
            if not match or not match.group("metrics"):
                raise RuntimeError(f"unexpected start line {line!r}: {replica.log_tail()}")
            replica.port = int(match.group("port"))
            replica.metrics_port = int(match.group("metrics"))
        for replica in replicas:
            replica.wait_serving(timeout)
    except BaseException:
        for replica in replicas:
            replica.close(5)
        raise
    return replicas


def _read_line(replica: Replica, timeout: float) -> str:
    """The replica's 'listening on' line, without blocking past ``timeout``."""
    out: list[str] = []
    assert replica.proc.stdout is not None
    reader = threading.Thread(target=lambda: out.append(replica.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not out:
        raise TimeoutError(f"replica printed nothing in {timeout} s: {replica.log_tail()}")
    return out[0]
