"""The five model services and the orchestrator, each a process of its own (``audiomemory serve KIND``), as
deployed: what ``make bench-song`` and the soak of ``make reliability`` run their jobs against."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from audiomemory.stack import KINDS, MODEL_KINDS, LocalStack, definition


@dataclass
class Services:
    """The five services, each a process of its own (``audiomemory serve KIND``)."""

    settings: dict[str, dict[str, Any]]
    cache: Path
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)

    def start(self) -> Services:
        # The transcriber only when the settings name its model (the full-size set has none: no lyrics
        # are transcribed in these benchmarks).
        kinds = [kind for kind in MODEL_KINDS if kind != "transcriber" or self.settings.get(kind)]
        for kind in kinds:
            self._spawn(kind, self.settings.get(kind, {}))
        self._wait(kinds)
        targets = {f"{kind}_target": self.addresses[kind] for kind in kinds}
        self._spawn("orchestrator", {**targets, "cache_dir": str(self.cache), "concurrency": 1})
        self._wait(["orchestrator"])
        return self

    def time_starts(self, kinds: list[str]) -> dict[str, float]:
        """Start ``kinds`` one at a time (none shares the cores with another's start): seconds from spawning
        each process to its health answering SERVING (imports, weights, any conversion and compilation)."""
        times = {}
        for kind in kinds:
            began = time.perf_counter()
            self._spawn(kind, self.settings.get(kind, {}))
            self._wait([kind], poll=0.1)
            times[kind] = round(time.perf_counter() - began, 2)
        return times

    def _spawn(self, kind: str, settings: dict[str, Any]) -> None:
        fields = definition(kind).config_class.model_fields
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items() if k in fields]
        cmd = [sys.executable, "-m", "audiomemory.cli.main", "serve", kind, "--port=0", *flags]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs[kind] = proc
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"listening on (\S+)", line)
            if match:
                self.addresses[kind] = match.group(1).rstrip(",")
                return
        raise RuntimeError(f"{kind} exited before it listened: {' '.join(cmd)}")

    def _wait(self, kinds: list[str], timeout: float = 900, poll: float = 1.0) -> None:
        deadline = time.monotonic() + timeout
        for kind in kinds:
            with grpc.insecure_channel(self.addresses[kind]) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while True:
                    try:
                        if stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1:
                            break
                    except grpc.RpcError:
                        pass
                    if time.monotonic() > deadline or self.procs[kind].poll() is not None:
                        raise RuntimeError(f"{kind} did not become SERVING")
                    time.sleep(poll)

    def peak_rss_mb(self) -> dict[str, float]:
        peaks = {}
        for kind, proc in self.procs.items():
            text = Path(f"/proc/{proc.pid}/status").read_text()
            peaks[kind] = round(int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024, 1)  # type: ignore[union-attr]
        return peaks

    def stop(self) -> None:
        """The front door first, then the model services (as a rollout drains them): an orchestrator terminated
        together with its models once outlived a 60-s wait (a full suite on two loaded cores, not reproduced)."""
        front = [p for kind, p in self.procs.items() if kind == "orchestrator"]
        for group in (front, [p for p in self.procs.values() if p not in front]):
            for proc in group:
                proc.terminate()
            for proc in group:
                proc.wait(60)


@dataclass
class InProcessServices:
    """The same services hosted in this process (``LocalStack``, loopback gRPC): quicker to start than six
    processes, for the smoke versions; every kind's peak RSS is then this process's."""

    settings: dict[str, dict[str, Any]]
    cache: Path
    stack: LocalStack | None = None
    addresses: dict[str, str] = field(default_factory=dict)

    def start(self) -> InProcessServices:
        overrides = {kind: {k: v for k, v in self.settings.get(kind, {}).items()
                            if k in definition(kind).config_class.model_fields} for kind in KINDS}
        overrides["orchestrator"].update({"cache_dir": str(self.cache), "concurrency": 1})
        self.stack = LocalStack(overrides).start()
        self.addresses = {kind: service.address for kind, service in self.stack.services.items()}
        return self

    def peak_rss_mb(self) -> dict[str, float]:
        text = Path("/proc/self/status").read_text()
        peak = round(int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024, 1)  # type: ignore[union-attr]
        return dict.fromkeys(self.addresses, peak)

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
