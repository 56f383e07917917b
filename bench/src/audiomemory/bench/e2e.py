"""Benchmark the whole pipeline on full-size random-weight models (same compute as the real ones).

Writes, under a temporary folder (or ``--root``), the published htdemucs architecture, OpenL3
music/mel256/512, CLIP ViT-L/14's text tower and SD 1.5's UNet + VAE, all random weights, and
starts the five model services (the transcriber on the tiny profile's model: these jobs give their
lyrics, so it only answers ``Describe``) and the orchestrator in this process (``LocalStack``, loopback
gRPC, ephemeral ports). On one synthetic song (WAV, 44.1 kHz stereo) it then measures, in one run:

- (a) a whole job through gRPC (``Client.create_image``: upload → orchestrator → four services → PNG),
  with the orchestrator's audio cache emptied first, so every stage runs;
- (b) the same job code (``orchestrator.pipeline.Pipeline.run``) with the *same loaded backends* as its
  in-process stages (``InProcessPipeline``); ratio ``grpc_over_inprocess`` = (a) / (b) (target <= 1.03);
- (c) the front half (client call start → the ``ENCODING_TEXT`` stage event: upload, decode,
  separate, embed the four stems, pool) cold (empty cache) vs on a second job with the same song
  (cache hit: the events say ``cache_hit``); ratio ``cache_hit_over_cold`` (target <= 0.05).

Both sides run the same job: separation, embedding and text encoding as tasks of the job, the stems handed
on as they are separated; only the stages' adapter differs (gRPC services, or the backends called in this
process; the in-process side has no audio cache). Each path runs ``--repeat``
times, interleaved (gRPC cold, gRPC hit, in-process; the next round in-process first) so drift
in a shared machine's load hits all alike; the ratios use the minimum of each path (the run least
disturbed by other work), medians are printed too. Two warm-up jobs (one step; in-process, then
through gRPC) page every weight in and start every handler thread before anything is timed.
The heap allocator is part of the parameters: ``make bench-e2e`` preloads tcmalloc when it is
installed, as the images do (``make bench-e2e TCMALLOC=`` measures glibc malloc).
Prints the parameters first, a table, and last one JSON line. ``--tiny`` runs the tiny profile's models
(a quick check of this code, figures meaningless; the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from audiomemory import profiles
from audiomemory.bench.common import LYRICS, cpu_model, progress, song_wav
from audiomemory.bench.inprocess import InProcessPipeline
from audiomemory.bench.models import write_models
from audiomemory.client import Client, ImageResult
from audiomemory.runtime.allocator import heap_allocator
from audiomemory.stack import MODEL_KINDS, LocalStack
from audiomemory.v1 import orchestrator_pb2

Stage = orchestrator_pb2.Stage
#: The kinds ``InProcessPipeline`` takes, in its order (no transcriber: the lyrics are given).
PIPELINE_KINDS = ("separator", "audio_encoder", "text_encoder", "generator")


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
    front = result.timings["audio"]  # from the start: decode, separate, embed, pool
    return {"total_s": total, "cpu_s": cpu, "front_half_s": front,
            "timings": {k: round(v, 3) for k, v in result.timings.items()}}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the synthetic song")
    parser.add_argument("--size", type=int, default=256, help="image width = height")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each path (min and median)")
    add_stack_arguments(parser)
    return parser.parse_args(argv)


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``stack_overrides`` reads (and guidance, the warm-up), shared with ``make bench-reel``."""
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--hop", type=float, default=0.5, help="OpenL3 hop in seconds")
    parser.add_argument("--root", type=Path, default=None, help="where models go (kept; reused if written)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--tiny", action="store_true", help="the tiny profile's models (a quick check of this script)")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="no warm-up jobs before the timed ones (a quick check of this script)")


def stack_overrides(args: argparse.Namespace, root: Path, cache_dir: Path) -> dict[str, dict[str, Any]]:
    """Every service's config overrides: the models (the five of the tiny profile, or the four full-size ones
    and the tiny transcriber), CPU, the threads, the hop, the orchestrator's cache."""
    overrides = write_models(root, tiny=args.tiny)
    if "transcriber" not in overrides:
        overrides["transcriber"] = profiles.write_tiny_for("transcriber", root / "transcriber")
    common: dict[str, Any] = {"device": "cpu"}
    if args.threads:
        common["torch_threads"] = args.threads
    for kind in MODEL_KINDS:
        overrides[kind].update(common)
    overrides["audio_encoder"]["hop_seconds"] = args.hop
    overrides["orchestrator"] = {"cache_dir": str(cache_dir)}
    return overrides


def measure(stack: LocalStack, song: bytes, options: dict[str, Any], repeat: int,
            cache_dir: Path, warm_up: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Warm-up jobs each way, then ``repeat`` rounds of gRPC cold, gRPC hit and in-process, interleaved."""
    pipeline = InProcessPipeline(*(stack.services[kind].backend for kind in PIPELINE_KINDS),
                                 configs={kind: stack.services[kind].config for kind in PIPELINE_KINDS})
    if warm_up:
        start = time.perf_counter()
        pipeline.run(song, lyrics=LYRICS, **{**options, "steps": 1})  # warm-up: pages every weight in
        progress(f"warm-up job (1 step, in-process) {time.perf_counter() - start:.1f} s")
    runs: dict[str, list[dict[str, Any]]] = {"grpc_cold": [], "grpc_hit": [], "inprocess": []}

    def local(i: int) -> None:
        runs["inprocess"].append(inprocess_job(pipeline, song, options))
        progress(f"round {i + 1}: in-process {runs['inprocess'][-1]['total_s']:.1f} s")

    with Client(stack.address) as client:
        # The first job through the services is much slower than later ones (each service's
        # handler threads run their first model calls), so it is a warm-up too, not a sample.
        if warm_up:
            start = time.perf_counter()
            grpc_job(client, song, {**options, "steps": 1})
            progress(f"warm-up job (1 step, gRPC, cold) {time.perf_counter() - start:.1f} s")
        for i in range(repeat):
            # Alternate which side goes first: on a shared machine the load drifts during a
            # run, and a fixed order would hand the quieter moments to one side.
            if i % 2 == 1:
                local(i)
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
                local(i)
    return runs


def table(runs: dict[str, list[dict[str, Any]]]) -> None:
    """The seconds of each path and stage: min, median, every run."""
    rows = [
        ("whole job, gRPC (cache emptied)", "grpc_cold", "total_s"),
        ("whole job, in-process", "inprocess", "total_s"),
        ("whole job CPU s, gRPC", "grpc_cold", "cpu_s"),
        ("whole job CPU s, in-process", "inprocess", "cpu_s"),
        ("whole job, gRPC, cache hit", "grpc_hit", "total_s"),
        ("front half, cold (gRPC)", "grpc_cold", "front_half_s"),
        ("front half, cache hit (gRPC)", "grpc_hit", "front_half_s"),
        ("front half from UPLOADING, cold", "grpc_cold", "front_half_from_upload_s"),
        ("front half from UPLOADING, hit", "grpc_hit", "front_half_from_upload_s"),
        ("front half, in-process", "inprocess", "front_half_s"),
    ]
    print(f"\n{'seconds':34} {'min':>9} {'median':>9}  runs")
    for name, path, key in rows:
        values = [r[key] for r in runs[path]]
        print(f"{name:34} {min(values):9.3f} {statistics.median(values):9.3f}  "
              + " ".join(f"{v:.3f}" for v in values))


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The ratios (min/min; medians and CPU alongside) and every run's seconds, for the JSON line."""
    def col(path: str, key: str, digits: int = 3) -> list[float]:
        return [round(r[key], digits) for r in runs[path]]

    grpc_total, local_total = col("grpc_cold", "total_s", 9), col("inprocess", "total_s", 9)
    grpc_cpu, local_cpu = col("grpc_cold", "cpu_s", 9), col("inprocess", "cpu_s", 9)
    cold_front, hit_front = col("grpc_cold", "front_half_s", 9), col("grpc_hit", "front_half_s", 9)
    return {
        "statistic": "min over repeats (medians alongside)",
        "grpc_over_inprocess": round(min(grpc_total) / min(local_total), 4),
        "grpc_over_inprocess_median": round(statistics.median(grpc_total) / statistics.median(local_total), 4),
        "grpc_over_inprocess_cpu": round(min(grpc_cpu) / min(local_cpu), 4),
        "cache_hit_over_cold": round(min(hit_front) / min(cold_front), 5),
        "grpc_total_s": col("grpc_cold", "total_s"),
        "inprocess_total_s": col("inprocess", "total_s"),
        "grpc_cpu_s": col("grpc_cold", "cpu_s"),
        "inprocess_cpu_s": col("inprocess", "cpu_s"),
        "grpc_hit_total_s": col("grpc_hit", "total_s"),
        "front_half_cold_s": col("grpc_cold", "front_half_s"),
        "front_half_hit_s": col("grpc_hit", "front_half_s", 4),
        "grpc_cold_stage_stamps_s": runs["grpc_cold"][-1]["stamps"],
        "grpc_hit_stage_stamps_s": runs["grpc_hit"][-1]["stamps"],
        "inprocess_stage_s": runs["inprocess"][-1]["timings"],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine, load_start = cpu_model(), os.getloadavg()
    params = {
        "models": "tiny profile" if args.tiny else "full-size random weights",
        "clip_seconds": args.seconds, "clip_format": "WAV float32 44.1 kHz stereo",
        "openl3_hop_s": args.hop, "width": args.size, "height": args.size, "steps": args.steps,
        "guidance": args.guidance, "scheduler": "generator default", "repeat": args.repeat, "warm_up": args.warm_up,
        "torch_threads": torch.get_num_threads(), "device": "cpu", "allocator": heap_allocator(),
        "inprocess_front": "separator blocks -> one EmbedStream of the four stems, one thread",
    }
    print(f"machine: {machine}, {os.cpu_count()} CPUs, load average {load_start[0]:.2f} at start")
    print("parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    cache_dir = tmp / "cache"
    cache_dir.mkdir()
    options = {"seed": 7, "steps": args.steps, "width": args.size, "height": args.size, "guidance": args.guidance}
    try:
        overrides = stack_overrides(args, args.root or tmp / "models", cache_dir)
        start = time.perf_counter()
        with LocalStack(overrides) as stack:
            progress(f"stack up in {time.perf_counter() - start:.0f} s at {stack.address}")
            runs = measure(stack, song_wav(args.seconds), options, args.repeat, cache_dir, args.warm_up)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the cache, and the models unless --root kept them elsewhere
    table(runs)
    figures = summary(runs)
    load_end = os.getloadavg()
    print(f"\ngrpc_over_inprocess  {figures['grpc_over_inprocess']:.4f}  (min/min; target <= 1.03)"
          f"  median/median {figures['grpc_over_inprocess_median']:.4f}"
          f"  CPU min/min {figures['grpc_over_inprocess_cpu']:.4f}")
    print(f"cache_hit_over_cold  {figures['cache_hit_over_cold']:.4f}  (min/min; target <= 0.05)")
    print(f"load average {load_end[0]:.2f} at end")
    print(json.dumps({"bench": "e2e", "machine": machine, "cpus": os.cpu_count(),
                      "load_avg_1m_start": round(load_start[0], 2), "load_avg_1m_end": round(load_end[0], 2),
                      **params, **figures}))
