"""Benchmark the whole pipeline on full-size random-weight models (same compute as the real ones).

Writes, under a temporary folder (or ``--root``), the published htdemucs architecture, OpenL3
music/mel256/512, CLIP ViT-L/14's text tower and SD 1.5's UNet + VAE, all random weights, and
starts the four services and the orchestrator in this process (``LocalStack``, loopback gRPC,
ephemeral ports). On one synthetic song (WAV, 44.1 kHz stereo) it then measures, in one run:

- (a) a whole job through gRPC (``Client.create_image``: upload → orchestrator → four services → PNG),
  with the orchestrator's audio cache emptied first, so every stage runs;
- (b) the same job with the *same loaded backends* called in-process (``InProcessPipeline``);
  ratio ``grpc_over_inprocess`` = (a) / (b) (target <= 1.03);
- (c) the front half (client call start → the ``ENCODING_TEXT`` stage event: upload, decode,
  separate, embed the four stems, pool) cold (empty cache) vs on a second job with the same song
  (cache hit: the events say ``cache_hit``); ratio ``cache_hit_over_cold`` (target <= 0.05).

The in-process side runs the services' streaming steps in one thread (separator blocks into one
``EmbedStream`` of the four stems); the gRPC side runs them in their services, separation and
embedding overlapping as the stems stream. Each path runs ``--repeat``
times, interleaved (gRPC cold, gRPC hit, in-process; the next round in-process first) so drift
in a shared machine's load hits all alike; the ratios use the minimum of each path (the run least
disturbed by other work), medians are printed too. Two warm-up jobs (one step; in-process, then
through gRPC) page every weight in and start every handler thread before anything is timed.
The heap allocator is part of the parameters: ``make bench-e2e`` preloads tcmalloc when it is
installed, as the images do (``make bench-e2e TCMALLOC=`` measures glibc malloc).
Prints the parameters first, a table, and last one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from audiomemory.audio_encoder.backends.openl3 import OpenL3Backend
from audiomemory.bench.inprocess import InProcessPipeline
from audiomemory.client import Client, ImageResult
from audiomemory.runtime.allocator import heap_allocator
from audiomemory.separator.backends.demucs import HTDEMUCS_KWARGS, write_repo
from audiomemory.stack import MODEL_KINDS, LocalStack
from audiomemory.v1 import orchestrator_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vision import write_full_size  # a sibling script, not a package
from benchlib import cpu_model, progress  # a sibling script (scripts/ is on sys.path when run)

LYRICS = """neon rain on the window, we were young
hold the light, hold the light
the city hums a song we never sung
hold the light, hold the light"""

Stage = orchestrator_pb2.Stage


def song_wav(seconds: float, rate: int = 44100) -> bytes:
    """A synthetic stereo 'song': a bass line, a chord pad, a noise-burst beat; WAV float32 bytes."""
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(0)
    bass = 0.25 * np.sin(2 * np.pi * 55 * t * (1 + (np.floor(t * 2) % 4) / 8))
    pad = sum(0.08 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    beat = 0.3 * rng.standard_normal(t.shape) * np.exp(-30 * ((t * 2) % 1))
    left = bass + pad + beat
    right = bass + 0.8 * pad + beat * 0.9
    audio = np.stack([left, right], axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def write_models(root: Path) -> dict[str, dict[str, Any]]:
    """Full-size random-weight models under ``root`` (reused when already there); per-kind overrides."""
    root.mkdir(parents=True, exist_ok=True)
    done = root / ".written"
    demucs = root / "demucs"
    sd, clip = root / "sd15-random", root / "clip-l-random"
    if not done.exists():
        start = time.perf_counter()
        write_repo(demucs, "htdemucs_random", HTDEMUCS_KWARGS)
        OpenL3Backend.write_tiny(root)  # the real OpenL3 architecture; "tiny" only in name here
        write_full_size(root)
        done.write_text("ok\n")
        progress(f"wrote full-size random models in {time.perf_counter() - start:.0f} s under {root}")
    else:
        progress(f"reusing models under {root}")
    return {
        "separator": {"model": "htdemucs_random", "repo": str(demucs)},
        "audio_encoder": {"weights_dir": str(root / "openl3")},
        "text_encoder": {"model": str(clip)},
        "generator": {"model": str(sd)},
    }


def clear_cache(cache_dir: Path) -> None:
    """Empty the orchestrator's audio cache, so the next job computes the front half (a miss)."""
    for child in cache_dir.glob("*"):
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def grpc_job(client: Client, song: bytes, options: dict[str, Any]) -> dict[str, Any]:
    """One job through the orchestrator; client-side seconds from call start to each stage."""
    stamps: dict[str, float] = {}
    hit = False
    png = b""
    cpu0 = time.process_time()
    start = time.perf_counter()
    for item in client.create_image(song, lyrics=LYRICS, filename="song.wav", **options):
        now = time.perf_counter() - start
        if isinstance(item, ImageResult):
            png = item.png
            stamps["result"] = now
        else:
            stamps.setdefault(Stage.Name(item.stage), now)  # first event of each stage
            hit = hit or item.cache_hit
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    if not png.startswith(b"\x89PNG"):
        raise RuntimeError("the orchestrator returned no PNG")
    if "STAGE_ENCODING_TEXT" not in stamps:
        raise RuntimeError(f"no ENCODING_TEXT stage event; saw {sorted(stamps)}")
    return {
        "total_s": total,
        "cpu_s": cpu,
        "front_half_s": stamps["STAGE_ENCODING_TEXT"],
        # Same, from the UPLOADING event: leaves out the per-job Describe of the four services.
        "front_half_from_upload_s": stamps["STAGE_ENCODING_TEXT"] - stamps.get("STAGE_UPLOADING", 0.0),
        "cache_hit": hit,
        "stamps": {k: round(v, 3) for k, v in stamps.items()},
    }


def inprocess_job(pipeline: InProcessPipeline, song: bytes, options: dict[str, Any]) -> dict[str, Any]:
    cpu0 = time.process_time()
    start = time.perf_counter()
    result = pipeline.run(song, lyrics=LYRICS, **options)
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    if not result.png.startswith(b"\x89PNG"):
        raise RuntimeError("the in-process pipeline returned no PNG")
    front = result.timings["decode"] + result.timings["separate"] + result.timings["embed"]
    return {"total_s": total, "cpu_s": cpu, "front_half_s": front,
            "timings": {k: round(v, 3) for k, v in result.timings.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the synthetic song")
    parser.add_argument("--size", type=int, default=256, help="image width = height")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--hop", type=float, default=0.5, help="OpenL3 hop in seconds (the service default is 0.2)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each path (min and median)")
    parser.add_argument("--root", type=Path, default=None, help="where models go (kept; reused if written)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    machine = cpu_model()
    load_start = os.getloadavg()
    params = {
        "clip_seconds": args.seconds, "clip_format": "WAV float32 44.1 kHz stereo",
        "openl3_hop_s": args.hop, "width": args.size, "height": args.size, "steps": args.steps,
        "guidance": args.guidance, "scheduler": "generator default", "repeat": args.repeat,
        "torch_threads": torch.get_num_threads(), "device": "cpu", "allocator": heap_allocator(),
        "inprocess_front": "separator blocks -> one EmbedStream of the four stems, one thread",
    }
    print(f"machine: {machine}, {os.cpu_count()} CPUs, load average {load_start[0]:.2f} at start")
    print("parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()), flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    root = args.root or tmp / "models"
    cache_dir = tmp / "cache"
    cache_dir.mkdir()
    song = song_wav(args.seconds)
    options = {"seed": 7, "steps": args.steps, "width": args.size, "height": args.size,
               "guidance": args.guidance}
    try:
        overrides = write_models(root)
        common: dict[str, Any] = {"device": "cpu"}
        if args.threads:
            common["torch_threads"] = args.threads
        for kind in MODEL_KINDS:
            overrides[kind].update(common)
        overrides["audio_encoder"]["hop_seconds"] = args.hop
        overrides["orchestrator"] = {"cache_dir": str(cache_dir)}
        start = time.perf_counter()
        with LocalStack(overrides) as stack:
            progress(f"stack up in {time.perf_counter() - start:.0f} s at {stack.address}")
            pipeline = InProcessPipeline(*(stack.services[kind].backend for kind in MODEL_KINDS))
            start = time.perf_counter()
            pipeline.run(song, lyrics=LYRICS, **{**options, "steps": 1})  # warm-up: pages every weight in
            progress(f"warm-up job (1 step, in-process) {time.perf_counter() - start:.1f} s")
            runs: dict[str, list[dict[str, Any]]] = {"grpc_cold": [], "grpc_hit": [], "inprocess": []}
            with Client(stack.address) as client:
                # The first job through the services is much slower than later ones (each service's
                # handler threads run their first model calls), so it is a warm-up too, not a sample.
                start = time.perf_counter()
                grpc_job(client, song, {**options, "steps": 1})
                progress(f"warm-up job (1 step, gRPC, cold) {time.perf_counter() - start:.1f} s")
                for i in range(args.repeat):
                    # Alternate which side goes first: on a shared machine the load drifts during a
                    # run, and a fixed order would hand the quieter moments to one side.
                    if i % 2 == 1:
                        local = inprocess_job(pipeline, song, options)
                        runs["inprocess"].append(local)
                        progress(f"round {i + 1}: in-process {local['total_s']:.1f} s")
                    clear_cache(cache_dir)
                    cold = grpc_job(client, song, options)
                    if cold["cache_hit"]:
                        raise RuntimeError("a job after emptying the cache reported a cache hit")
                    runs["grpc_cold"].append(cold)
                    progress(f"round {i + 1}: gRPC cold {cold['total_s']:.1f} s (front {cold['front_half_s']:.2f} s)")
                    hit = grpc_job(client, song, options)
                    if not hit["cache_hit"]:
                        raise RuntimeError("the second job with the same song was not a cache hit")
                    runs["grpc_hit"].append(hit)
                    progress(f"round {i + 1}: gRPC hit {hit['total_s']:.1f} s (front {hit['front_half_s']:.3f} s)")
                    if i % 2 == 0:
                        local = inprocess_job(pipeline, song, options)
                        runs["inprocess"].append(local)
                        progress(f"round {i + 1}: in-process {local['total_s']:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the cache, and the models unless --root kept them elsewhere

    def col(path: str, key: str) -> list[float]:
        return [r[key] for r in runs[path]]

    grpc_total, local_total = col("grpc_cold", "total_s"), col("inprocess", "total_s")
    grpc_cpu, local_cpu = col("grpc_cold", "cpu_s"), col("inprocess", "cpu_s")
    cold_front, hit_front = col("grpc_cold", "front_half_s"), col("grpc_hit", "front_half_s")
    rows = [
        ("whole job, gRPC (cache emptied)", grpc_total),
        ("whole job, in-process", local_total),
        ("whole job CPU s, gRPC", grpc_cpu),
        ("whole job CPU s, in-process", local_cpu),
        ("whole job, gRPC, cache hit", col("grpc_hit", "total_s")),
        ("front half, cold (gRPC)", cold_front),
        ("front half, cache hit (gRPC)", hit_front),
        ("front half from UPLOADING, cold", col("grpc_cold", "front_half_from_upload_s")),
        ("front half from UPLOADING, hit", col("grpc_hit", "front_half_from_upload_s")),
        ("front half, in-process", col("inprocess", "front_half_s")),
    ]
    print(f"\n{'seconds':34} {'min':>9} {'median':>9}  runs")
    for name, values in rows:
        print(f"{name:34} {min(values):9.3f} {statistics.median(values):9.3f}  "
              + " ".join(f"{v:.3f}" for v in values))
    ratio = min(grpc_total) / min(local_total)
    cache_ratio = min(hit_front) / min(cold_front)
    load_end = os.getloadavg()
    print(f"\ngrpc_over_inprocess  {ratio:.4f}  (min/min; target <= 1.03)"
          f"  median/median {statistics.median(grpc_total) / statistics.median(local_total):.4f}"
          f"  CPU min/min {min(grpc_cpu) / min(local_cpu):.4f}")
    print(f"cache_hit_over_cold  {cache_ratio:.4f}  (min/min; target <= 0.05)")
    print(f"load average {load_end[0]:.2f} at end")
    summary = {
        "bench": "e2e",
        "machine": machine,
        "cpus": os.cpu_count(),
        "load_avg_1m_start": round(load_start[0], 2),
        "load_avg_1m_end": round(load_end[0], 2),
        **params,
        "statistic": "min over repeats (medians alongside)",
        "grpc_over_inprocess": round(ratio, 4),
        "grpc_over_inprocess_median": round(statistics.median(grpc_total) / statistics.median(local_total), 4),
        "grpc_over_inprocess_cpu": round(min(grpc_cpu) / min(local_cpu), 4),
        "cache_hit_over_cold": round(cache_ratio, 5),
        "grpc_total_s": [round(v, 3) for v in grpc_total],
        "inprocess_total_s": [round(v, 3) for v in local_total],
        "grpc_cpu_s": [round(v, 3) for v in grpc_cpu],
        "inprocess_cpu_s": [round(v, 3) for v in local_cpu],
        "grpc_hit_total_s": [round(v, 3) for v in col("grpc_hit", "total_s")],
        "front_half_cold_s": [round(v, 3) for v in cold_front],
        "front_half_hit_s": [round(v, 4) for v in hit_front],
        "grpc_cold_stage_stamps_s": runs["grpc_cold"][-1]["stamps"],
        "grpc_hit_stage_stamps_s": runs["grpc_hit"][-1]["stamps"],
        "inprocess_stage_s": runs["inprocess"][-1]["timings"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
