"""Memory under many callers: peak RSS of ``audiomemory up`` with 2, then 8 clients uploading a long song at once.

The job budget (docs/DESIGN.md §4) says memory must not grow with the number of waiting callers: a queued
job is not read until it runs, and running jobs share ``max_audio_bytes`` of decoded audio. One
``audiomemory up --models tiny`` (all five services in one process, as a new user runs it; the command
preloads tcmalloc itself when it is installed) gets, for each client count in turn, that many clients
at once, each uploading the same ``--song-minutes`` MP3 (a synthetic one, stereo 44.1 kHz, written with
PyAV); the process's peak RSS is reset in between (``/proc/PID/clear_refs``), so each count has its own
peak. ``4x2`` is four callers at once, twice in a row under one peak: as many jobs as 8 callers at
once, each handing over to a caller already waiting, so the two peaks differ by the callers waiting and not
by the jobs a stack has run (its peak rises with those by itself) nor by hand-overs (a cancelled job's calls
still ending in the services while its successor starts; ``2x4`` never hands over: RELIABILITY.md).
A client whose job reaches its first embedded frames (``--cancel-at embedding``: the song is
decoded, separated and streaming; ``separating``: 10 s separated) cancels it (a whole 18-minute job on the
tiny profile's full-size OpenL3 would take half an hour a job); every call's final status is recorded (OK,
RESOURCE_EXHAUSTED, or CANCELLED by its client; anything else is a failure), and health is checked every
2 s while they run and after.

    python scripts/reliability_memory.py --song-minutes 18 --clients 4x2 8

Prints one JSON line per client count and a last one with the growth and whether it is within 512 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from audiomemory.bench.common import progress
from audiomemory.client import Client, ImageResult
from audiomemory.runtime.allocator import heap_allocator
from audiomemory.v1 import orchestrator_pb2

RATE = 44_100


def write_mp3(path: Path, minutes: float) -> Path:
    """A stereo chord with a little noise, ``minutes`` long, as a 128 kb/s MP3 (10 s at a time)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="mp3") as container:
        stream: Any = container.add_stream("libmp3lame", rate=RATE, layout="stereo")
        stream.bit_rate = 128_000
        for start in range(0, int(minutes * 60), 10):
            t = (start * RATE + np.arange(10 * RATE)) / RATE
            tone = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 330 * t)
            block = np.stack([tone, tone * 0.8]) + 0.01 * rng.standard_normal((2, t.size))
            frame = av.AudioFrame.from_ndarray(block.astype(np.float32), format="fltp", layout="stereo")
            frame.sample_rate = RATE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


#: Where a caller cancels its job: once frames are embedded (the song decoded, separated and streaming through
#: the audio encoder), or once ``SEPARATED_S`` seconds are separated (decoded and streaming to the separator:
#: the suite's test, which does not wait for the encoder's first batch — some 15 s a job on two cores).
CANCEL_AT = {"embedding": (orchestrator_pb2.Stage.STAGE_EMBEDDING, 1),
             "separating": (orchestrator_pb2.Stage.STAGE_SEPARATING, 10)}


def client(address: str, song: Path, seed: int, statuses: list[str], cancel_at: str = "embedding") -> None:
    """One caller: upload, follow the events, cancel at ``cancel_at`` (``CANCEL_AT``); record how the call ended."""
    stage, current = CANCEL_AT[cancel_at]
    try:
        with Client(address) as c:
            for event in c.create_image(song, lyrics="a long song", seed=seed, steps=1):
                if isinstance(event, ImageResult):
                    statuses.append("OK")
                    return
                if event.stage == stage and event.current >= current:
                    statuses.append("CANCELLED")  # by this client: leaving the loop cancels the call
                    return
    except grpc.RpcError as exc:
        statuses.append(exc.code().name)


def serving(address: str, problems: list[str]) -> bool:
    """Whether health says SERVING now; what it said otherwise goes to ``problems``."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        except grpc.RpcError as exc:
            problems.append(f"{exc.code().name}: {exc.details()}")
            return False
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            problems.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def callers(address: str, clients: int, song: Path, cancel_at: str = "embedding") -> dict[str, Any]:
    """``clients`` callers at once; their statuses and whether health said SERVING throughout."""
    statuses: list[str] = []
    threads = [threading.Thread(target=client, args=(address, song, seed, statuses, cancel_at))
               for seed in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    healthy, problems = True, list[str]()
    while any(t.is_alive() for t in threads):
        healthy &= serving(address, problems)
        time.sleep(2)
    healthy &= serving(address, problems)
    return {"clients": clients, "statuses": dict(Counter(statuses)), "health_serving_throughout": healthy,
            "health_problems": problems[:3], "wall_s": round(time.monotonic() - started, 1)}


def measure(counts: list[int | tuple[int, int]], song: Path, cancel_at: str = "embedding") -> list[dict[str, Any]]:
    """One ``up --models tiny``; for each count, that many callers at once and the peak RSS while they ran
    (the kernel's high-water mark, reset between counts through ``/proc/PID/clear_refs``). A count
    ``(n, rounds)``: n callers at once, ``rounds`` times in a row under one high-water mark — as many jobs
    as ``n * rounds`` callers at once, so the two peaks differ by the callers waiting, not by the jobs run."""
    with stack_up() as (proc, address):
        runs = []
        for count in counts:
            clients, rounds = count if isinstance(count, tuple) else (count, 1)
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS now
            before = rss_mb(proc.pid)
            run = callers(address, clients, song, cancel_at)
            for _ in range(rounds - 1):
                more = callers(address, clients, song, cancel_at)
                run = {**more, "statuses": dict(Counter(run["statuses"]) + Counter(more["statuses"])),
                       "health_serving_throughout": run["health_serving_throughout"]
                       and more["health_serving_throughout"],
                       "health_problems": (run["health_problems"] + more["health_problems"])[:3],
                       "wall_s": round(run["wall_s"] + more["wall_s"], 1)}
            run["rounds"], run["cancel_at"] = rounds, cancel_at
            runs.append({**run, "rss_before_mb": round(before, 1), "peak_rss_mb": round(rss_mb(proc.pid, "VmHWM"), 1),
                         "allocator": heap_allocator(Path(f"/proc/{proc.pid}/maps"))})
            progress(json.dumps(runs[-1]))
        return runs


@contextlib.contextmanager
def stack_up() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``audiomemory up --models tiny`` as a process of its own (its RSS is the stack's), once every model has
    loaded: the process and the orchestrator's address; stopped on the way out. The callers stand for many
    callers, but all come from 127.0.0.1: one caller to the front door's share (``caller_share``,
    ``max_calls_per_caller``)."""
    cmd = [sys.executable, "-m", "audiomemory.cli.main", "up", "--models", "tiny"]
    env = {**os.environ, "AUDIOMEMORY_ORCHESTRATOR_CALLER_SHARE": "1000",
           "AUDIOMEMORY_ORCHESTRATOR_MAX_CALLS_PER_CALLER": "1000"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        address = next(m.group(1) for line in proc.stdout if (m := re.match(r"orchestrator\s+(\S+)", line)))
        models_loaded(address)  # `up` names its address before its services have loaded their models
        yield proc, address
    finally:
        proc.terminate()
        proc.wait(60)


def models_loaded(address: str, timeout: float = 300) -> None:
    """Wait until the orchestrator's ``Describe`` answers: it asks every model service, which answers once its
    model is loaded (a baseline taken before would count the loading as the callers' memory)."""
    deadline = time.monotonic() + timeout
    with Client(address, timeout=10) as client:
        while True:
            try:
                client.describe()
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """The process's resident set (``VmRSS``) or its high-water mark (``VmHWM``), in MB (MiB)."""
    return _kib(Path(f"/proc/{pid}/status").read_text(), field) / 1024


def _count(text: str) -> int | tuple[int, int]:
    clients, _, rounds = text.partition("x")
    return (int(clients), int(rounds)) if rounds else int(clients)


def _kib(status: str, field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--song-minutes", type=float, default=18.0)
    parser.add_argument("--clients", type=_count, nargs="+", default=[(4, 2), 8],
                        help="callers at once, one count after another; NxR: N at once, R rounds in a row")
    parser.add_argument("--cancel-at", choices=sorted(CANCEL_AT), default="embedding",
                        help="when each caller cancels its job")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "audiomemory-reliability")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    song = args.work / f"song-{args.song_minutes:g}min.mp3"
    if not song.exists():
        progress(f"writing a {args.song_minutes:g}-minute MP3")
        write_mp3(song, args.song_minutes)
    runs = measure(args.clients, song, args.cancel_at)
    for run in runs:
        print(json.dumps(run), flush=True)
    allowed = {"OK", "RESOURCE_EXHAUSTED", "CANCELLED"}
    growth = runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]
    print(json.dumps({
        "song_mb": round(song.stat().st_size / 1e6, 1), "song_minutes": args.song_minutes,
        "growth_mb": round(growth, 1), "growth_within_512_mb": growth <= 512,
        "only_ok_exhausted_or_cancelled": all(set(r["statuses"]) <= allowed for r in runs),
        "health_serving_throughout": all(r["health_serving_throughout"] for r in runs),
    }), flush=True)


if __name__ == "__main__":
    main()
