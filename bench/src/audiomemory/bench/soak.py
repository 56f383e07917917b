"""Soak: many sequential jobs through the five services, each in its own process; memory must not creep.

The services run as deployed (``audiomemory serve KIND``, one process each, loopback gRPC) with the tiny
profile and a 1-s OpenL3 hop, so a job takes seconds. ``--jobs`` jobs (default 200) go one after another,
each on a short clip: even jobs on a new clip (a cache miss: separation and embedding run), odd jobs on
the clip before with another seed (a cache hit). After ``--warmup`` jobs each process's resident memory
(VmRSS) is the baseline; at the end the growth of each must be under 50 MB, and no job may fail.

    python scripts/reliability_soak.py --jobs 200

``--threads N`` gives every model service N torch threads (default: torch's choice, as deployed).

Prints progress on stderr and one JSON line: jobs, failures, seconds, RSS per process after the warm-up
and at the end, the largest growth, and whether it is within the limit.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import soundfile as sf

from audiomemory import profiles
from audiomemory.bench.common import progress
from audiomemory.bench.processes import Services
from audiomemory.client import Client

GROWTH_LIMIT_MB = 50.0


def clip(index: int, seconds: float = 2.0, rate: int = 22_050) -> bytes:
    """A short stereo WAV, different for every ``index`` (a chord whose root moves, plus noise)."""
    rng = np.random.default_rng(index)
    t = np.arange(int(seconds * rate)) / rate
    root = 110.0 * 2 ** ((index % 24) / 12)
    tone = 0.2 * np.sin(2 * np.pi * root * t) + 0.1 * np.sin(2 * np.pi * 1.5 * root * t)
    audio = np.stack([tone, np.roll(tone, index + 1)]) + 0.01 * rng.standard_normal((2, t.size))
    buf = io.BytesIO()
    sf.write(buf, audio.T.astype(np.float32), rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def rss_mb(services: Services) -> dict[str, float]:
    """Each service process's resident memory now (VmRSS), MB."""
    out = {}
    for kind, proc in services.procs.items():
        status = Path(f"/proc/{proc.pid}/status").read_text()
        out[kind] = round(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024, 1)  # type: ignore[union-attr]
    return out


def soak(address: str, services: Services, jobs: int, warmup: int) -> dict[str, Any]:
    failures: list[str] = []
    baseline: dict[str, float] = {}
    started = time.perf_counter()
    with Client(address) as client:
        for job in range(jobs):
            song = clip(job if job % 2 == 0 else job - 1)  # odd jobs: the clip before (cache hit)
            try:
                client.generate(song, lyrics=f"soak {job}", seed=job, steps=1, width=64, height=64)
            except grpc.RpcError as exc:
                failures.append(f"job {job}: {exc.code().name}: {exc.details()}")
            if job + 1 == warmup:
                baseline = rss_mb(services)
            if (job + 1) % 20 == 0:
                progress(f"{job + 1}/{jobs} jobs, {len(failures)} failed, RSS {rss_mb(services)}")
    final = rss_mb(services)
    growth = {kind: round(final[kind] - baseline[kind], 1) for kind in final}
    return {
        "jobs": jobs, "failures": len(failures), "first_failures": failures[:3],
        "seconds": round(time.perf_counter() - started, 1), "warmup_jobs": warmup,
        "rss_after_warmup_mb": baseline, "rss_end_mb": final, "rss_growth_mb": growth,
        "max_growth_mb": max(growth.values()), "growth_within_50_mb": max(growth.values()) < GROWTH_LIMIT_MB,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20, help="jobs before the RSS baseline is taken")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "audiomemory-soak")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of each model service (default: torch's choice)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work / "cache", ignore_errors=True)  # every even job a miss, also on a rerun
    settings = profiles.make_tiny(args.work / "tiny")
    settings["audio_encoder"] = {**settings.get("audio_encoder", {}), "hop_seconds": 1.0}
    if args.threads:
        settings = {kind: {**values, "torch_threads": args.threads} for kind, values in settings.items()}
    progress("starting the five services")
    services = Services(settings, args.work / "cache").start()
    try:
        report = soak(services.addresses["orchestrator"], services, args.jobs, args.warmup)
    finally:
        services.stop()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
