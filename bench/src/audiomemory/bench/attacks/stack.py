"""The attacked stack and the measuring around an attack, for the suite (``audiomemory.bench.attacks``).

``Stack`` runs ``audiomemory up --models tiny`` (plaintext, or TLS + tokens) in a child process under a
memory cap (``RLIMIT_DATA``, set in the child before it imports anything; at rest the tiny stack has
VmData 0.95 GB and VmSize 1.7 GB, so ``RLIMIT_AS`` would spend its room on libraries' and reservations'
address space, not on what an attack makes the server hold), so an attack that got past the controls ends in the child's
MemoryError, not in the machine's OOM killer. Its RSS is read from ``/proc/PID/status`` (``VmHWM``, the
peak, is reset through ``/proc/PID/clear_refs`` before each attack). ``Measure`` runs one attack beside a
well-behaved victim's job and a health poller, and judges the issue's four criteria.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc

from audiomemory.bench.certs import Certs
from audiomemory.client import Client, ImageResult
from audiomemory.runtime.security import open_channel

MB = 1e6
GROWTH_MB = 256  # the bound beyond the decoded audio an attack's songs may hold
VICTIM_SECONDS = 60
SERVING = health_pb2.HealthCheckResponse.SERVING
# The child: the memory cap first, then the CLI (tcmalloc's re-exec keeps the limit).
CHILD = ("import resource, runpy, sys; cap = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_DATA, (cap, cap)); "
         "sys.argv = ['audiomemory', *sys.argv[2:]]; runpy.run_module('audiomemory.cli.main', run_name='__main__')")


def wav(seconds: float = 1.0, rate: int = 22050, channels: int = 1) -> bytes:
    """A sine of ``seconds`` as 16-bit WAV (the victim's song)."""
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.repeat(tone[:, None], channels, axis=1), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def code_name(exc: BaseException) -> str:
    return exc.code().name if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call) else type(exc).__name__


@dataclass
class Stack:
    """``audiomemory up --models tiny`` in a child process; TLS + tokens when ``certs`` is given."""

    cap_bytes: int
    env: dict[str, str]
    certs: Certs | None = None
    tokens: dict[str, str] = field(default_factory=dict)  # name -> token (each >= 32 characters)
    work: Path | None = None
    address: str = ""
    proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 600) -> Stack:
        # Every IPv4 and IPv6 interface: the attackers come from 127.0.0.1, the plaintext victim from ::1 — another
        # caller to the front door's share (on the secured stack it has a token of its own).
        args = ["up", "--models", "tiny", "--host", "[::]"]  # (grpc binds "[::]:0", not ":::0")
        if self.certs is not None:
            assert self.work is not None
            token_file = self.work / "tokens"
            token_file.write_text("".join(f"{token} {name}\n" for name, token in self.tokens.items()))
            args += ["--tls-cert", str(self.certs.cert), "--tls-key", str(self.certs.key),
                     "--tls-ca", str(self.certs.ca), "--auth-tokens", str(token_file)]
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(self.cap_bytes), *args], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, **self.env})
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            if line.startswith("orchestrator "):
                self.address = line.split()[1]
                break
            if time.monotonic() > deadline:
                break
        if not self.address:
            self.stop()
            raise RuntimeError("audiomemory up printed no orchestrator address")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # drain the rest
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _status(self, key: str) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024 / MB
        return float("nan")

    def rss_mb(self) -> float:
        return self._status("VmRSS")

    def peak_mb(self) -> float:
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        assert self.proc is not None
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def channel(self, token: str | None = None) -> grpc.Channel:
        """A channel to the front door: TLS with ``token`` (a name in ``tokens``) on the secured stack."""
        if self.certs is None:
            return grpc.insecure_channel(self.address)
        return open_channel(self.address, ca=self.certs.ca, token=self.tokens[token] if token else None)

    def client(self, token: str | None = None, *, victim: bool = False) -> Client:
        if self.certs is None:
            return Client(f"[::1]:{self.address.rpartition(':')[2]}" if victim else self.address)
        return Client(self.address, tls_ca=self.certs.ca, token=self.tokens[token] if token else None)


class Health:
    """Polls the front door's health ``Check`` (no token: as a probe does) until stopped."""

    def __init__(self, stack: Stack, every: float = 0.5) -> None:
        self.stack, self.every = stack, every
        self.seen: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.stack.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not self._stop.is_set():
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                    self.seen[health_pb2.HealthCheckResponse.ServingStatus.Name(status)] += 1
                except grpc.RpcError as exc:
                    self.seen[code_name(exc)] += 1
                self._stop.wait(self.every)

    def __enter__(self) -> Health:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def victim_job(stack: Stack, token: str | None, song: bytes) -> tuple[float, str]:
    """A well-behaved caller's 1-s job (tiny models, one step): its seconds and its ending status."""
    start = time.monotonic()
    try:
        with stack.client(token, victim=True) as client:
            client.timeout = VICTIM_SECONDS
            result = client.generate(song, lyrics="a victim's song", seed=1, steps=1, filename="victim.wav")
            status = "OK" if isinstance(result, ImageResult) and result.png[:4] == b"\x89PNG" else "NO_IMAGE"
    except Exception as exc:
        status = code_name(exc)
    return time.monotonic() - start, status


Attack = Callable[[], dict[str, Any]]


@dataclass
class Measure:
    """One attack beside a victim's job: the figures of the issue's criteria (a)–(c); (d) the attack reports."""

    stack: Stack
    victim_token: str | None
    song: bytes = field(default_factory=wav)

    def __call__(self, attack: Attack, *, legit_mb: float = 0.0, victim_after: float = 1.0
                 ) -> dict[str, Any]:
        """Run ``attack`` in a thread; ``victim_after`` s later the victim's job; figures once both end."""
        time.sleep(1.0)  # let the last attack's buffers go before the baseline
        self.stack.reset_peak()
        before = self.stack.rss_mb()
        out: dict[str, Any] = {}
        with Health(self.stack) as health:
            thread = threading.Thread(target=lambda: out.update(_guarded(attack)), daemon=True)
            thread.start()
            time.sleep(victim_after)
            victim_seconds, victim_status = victim_job(self.stack, self.victim_token, self.song)
            thread.join()
        peak = self.stack.peak_mb()
        health_ok = set(health.seen) == {"SERVING"}
        figures = {
            **out, "rss_before_mb": round(before), "rss_peak_mb": round(peak), "rss_growth_mb": round(peak - before),
            "legit_mb": round(legit_mb), "victim_seconds": round(victim_seconds, 1), "victim_status": victim_status,
            "health": dict(health.seen), "server_alive": self.stack.alive(),
        }
        checks = {
            "rss": peak - before <= GROWTH_MB + legit_mb,
            "victim": victim_status == "OK" and victim_seconds <= VICTIM_SECONDS,
            "health": health_ok and self.stack.alive(),
            "attack": bool(out.get("as_expected", False)),
        }
        figures["failed"] = [k for k, ok in checks.items() if not ok]
        figures["ok"] = not figures["failed"]
        return figures


def _guarded(attack: Attack) -> dict[str, Any]:
    try:
        return attack()
    except Exception as exc:
        return {"as_expected": False, "attack_error": f"{type(exc).__name__}: {exc}"[:300]}
