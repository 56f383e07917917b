"""Generator-tier throughput with 2 replicas versus 1 (`make bench-scale`).

Starts two generator replicas as separate processes (`audiomemory serve
generator`, configured by env like a container), each with ONE torch thread,
on a tiny-architecture Stable Diffusion pipeline with random weights run at a
larger size so that denoising, not gRPC, dominates a job. Then, in the same
run and on the same warm processes, it alternates two phases:

- 1 replica: a channel to replica A only;
- 2 replicas: one channel to `ipv4:A,B` with the cluster's service config
  (deploy/base/downstream-service-config.json: round_robin + retry),

each sending the same jobs from enough client threads to keep every replica
busy (2 per replica). Throughput is jobs per second; the ratio of the
2-replica to the 1-replica figure (median of the per-round ratios) is the last
line, as JSON: {"replicas2_over_1": x}. Ideal is 2.0 on a machine with two free cores.

    .venv/bin/python scripts/bench_scale.py [--jobs 12] [--rounds 3] [--steps 8] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from audiomemory.bench.common import cpu_model
from audiomemory.profiles import write_tiny_for
from audiomemory.runtime.allocator import heap_allocator
from audiomemory.runtime.codec import to_tensor
from audiomemory.v1 import common_pb2, generator_pb2, generator_pb2_grpc

REPO = Path(__file__).resolve().parents[4]  # bench/src/audiomemory/bench/: installed editable from the checkout
SERVICE_CONFIG = json.dumps(json.loads((REPO / "deploy" / "base" / "downstream-service-config.json").read_text()))
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")


def start_replica(overrides: dict[str, Any], log_path: Path) -> tuple[subprocess.Popen[str], str]:
    """One `audiomemory serve generator` process with one torch thread; returns (process, address)."""
    env = dict(os.environ)
    settings = {"host": "127.0.0.1", "port": 0, "torch_threads": 1, "device": "cpu", "grace_seconds": 5, **overrides}
    env.update({f"AUDIOMEMORY_GENERATOR_{k.upper()}": str(v) for k, v in settings.items()})
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "audiomemory.cli.main", "serve", "generator"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log_path.open("w"),
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = LISTENING.search(line)
    if not match:
        proc.kill()
        raise RuntimeError(f"replica did not start: {line!r}; see {log_path}")
    return proc, f"127.0.0.1:{match.group(1)}"


def wait_serving(address: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{address} not SERVING after {timeout} s")


def throughput(target: str, jobs: int, threads: int, steps: int, size: int, dim: int) -> float:
    """Jobs per second for ``jobs`` Generate calls from ``threads`` client threads."""
    rng = np.random.default_rng(0)
    embeds = to_tensor(rng.standard_normal((1, 77, dim)).astype(np.float32))
    negative = to_tensor(np.zeros((1, 77, dim), np.float32))
    options = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = generator_pb2_grpc.GeneratorStub(channel)
        grpc.channel_ready_future(channel).result(timeout=30)

        def job(i: int) -> None:
            request = generator_pb2.GenerateRequest(
                prompt_embeds=embeds, negative_prompt_embeds=negative, seed=i, steps=steps, width=size, height=size
            )
            png = b"".join(r.image.png for r in stub.Generate(request, timeout=600) if r.HasField("image"))
            if not png.startswith(b"\x89PNG"):
                raise RuntimeError("no PNG came back")

        start = time.perf_counter()
        with futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(job, range(jobs)))
        return jobs / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=12, help="Generate calls per phase.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating 1-replica/2-replica rounds.")
    parser.add_argument("--steps", type=int, default=8, help="Denoising steps per job.")
    parser.add_argument("--size", type=int, default=128, help="Image side in pixels (multiple of 8).")
    args = parser.parse_args(argv)

    print(f"load average at start: {_load()} on {os.cpu_count()} CPUs", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    overrides = write_tiny_for("generator", work / "tiny")
    procs: list[subprocess.Popen[str]] = []
    try:
        addresses = []
        for i in range(2):
            proc, address = start_replica(overrides, work / f"replica-{i}.log")
            procs.append(proc)
            addresses.append(address)
        for address in addresses:
            wait_serving(address)
        with grpc.insecure_channel(addresses[0]) as channel:
            dim = generator_pb2_grpc.GeneratorStub(channel).Describe(common_pb2.DescribeRequest()).cross_attention_dim
        one, two = addresses[0], "ipv4:" + ",".join(addresses)
        # Warm both replicas (first calls pay lazy initialisation).
        throughput(two, 4, 2, args.steps, args.size, dim)
        rates: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.rounds):
            for replicas, target in ((1, one), (2, two)):
                cpu0, wall0 = _cpu_seconds(procs), time.perf_counter()
                rate = throughput(target, args.jobs, 2 * replicas, args.steps, args.size, dim)
                cores = (_cpu_seconds(procs) - cpu0) / (time.perf_counter() - wall0)
                rates[replicas].append(rate)
                # Cores the replicas actually got: on a shared machine, the reason a ratio falls short of 2.
                print(
                    f"round {r + 1}: {replicas} replica(s): {rate:.3f} jobs/s, replicas used {cores:.2f} cores",
                    flush=True,
                )
        # Paired per round (the phases of one round run back to back), so drifting background load
        # on a shared machine affects both sides of each ratio alike.
        ratio = statistics.median(two_ / one_ for one_, two_ in zip(rates[1], rates[2], strict=True))
        cpu = cpu_model()
        print(
            f"generator tier, tiny SD architecture at {args.size}px x {args.steps} steps, {args.jobs} jobs per phase, "
            f"1 torch thread per replica, {os.cpu_count()} CPUs ({cpu}), heap allocator {heap_allocator()}, "
            f"load average {_load()} at the end: "
            f"1 replica {statistics.median(rates[1]):.3f} jobs/s, 2 replicas {statistics.median(rates[2]):.3f} jobs/s",
            flush=True,
        )
        print(json.dumps({"replicas2_over_1": round(ratio, 3)}))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _cpu_seconds(procs: list[subprocess.Popen[str]]) -> float:
    """User + system CPU time of the replica processes so far (Linux /proc)."""
    total = 0
    for proc in procs:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    """The 1-minute load average: other work on the machine takes cores from the replicas."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
