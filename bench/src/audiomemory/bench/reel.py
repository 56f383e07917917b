"""Benchmark the memory reel on full-size random-weight models (same compute as the real ones): what a reel costs
over the single image of the same song, and its sections painted in batches against one by one.

Writes (under ``--root``, or a temporary folder) the full-size random models ``make bench-e2e`` uses (htdemucs,
OpenL3 music/mel256/512, CLIP ViT-L/14's text tower, SD 1.5's UNet + VAE; the transcriber the tiny profile's: the
jobs give their lyrics), starts the five model services and an orchestrator in this process (``LocalStack``,
loopback gRPC), and a second orchestrator in front of the same services that paints a reel's sections one
``Generate`` each (``reel_max_batch=1``). On one synthetic song (WAV, ``--seconds``, at least 3.5 minutes by
default) it measures, ``--repeat`` rounds, interleaved:

- **image**: ``CreateImage`` with the orchestrator's audio cache emptied (every stage runs);
- **reel**: ``CreateReel`` of ``--sections`` sections, cache emptied, painted in batches of the generator's
  ``max_batch``; ``reel_extra_over_image_s`` = reel − image (min over rounds each);
- **painting**: the reel's painting alone — from the ``ReelSections`` message to its last image — batched
  (the first orchestrator) and one by one (the second), each after a job that left the song's audio in the
  cache; ``one_by_one_over_batched`` = one by one / batched.

The images are small and the steps few (``--size``, ``--steps``: printed, and in the JSON) so that a run takes
minutes on 2 cores; the painting's share of a job grows with both. Prints the parameters, a table, and last one
JSON line. ``--tiny``: the tiny profile's models, a quick check of this script (the test suite runs it).
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

from audiomemory.bench.common import LYRICS, cpu_model, progress, song_wav
from audiomemory.bench.e2e import add_stack_arguments, clear_cache, stack_overrides
from audiomemory.client import Client, ImageResult
from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.service import DEFINITION
from audiomemory.reel import SectionResult
from audiomemory.runtime.allocator import heap_allocator
from audiomemory.runtime.service import start_service
from audiomemory.stack import MODEL_KINDS, LocalStack
from audiomemory.v1 import orchestrator_pb2


def image_job(client: Client, song: bytes, options: dict[str, Any]) -> dict[str, float]:
    start = time.perf_counter()
    for item in client.create_image(song, lyrics=LYRICS, filename="song.wav", **options):
        if isinstance(item, ImageResult):
            return {"total_s": time.perf_counter() - start}
    raise RuntimeError("the orchestrator returned no image")


def reel_job(client: Client, song: bytes, options: dict[str, Any], sections: int,
             min_section_seconds: int = 0) -> dict[str, float]:
    """One reel; seconds from the call's start to the sections found, and from there to its last image."""
    start = time.perf_counter()
    found, images = 0.0, []
    for item in client.create_reel(song, lyrics=LYRICS, filename="song.wav", sections=sections,
                                   min_section_seconds=min_section_seconds, **options):
        if isinstance(item, orchestrator_pb2.ReelSections):
            found = time.perf_counter() - start
        elif isinstance(item, SectionResult):
            images.append(item)
    total = time.perf_counter() - start
    if len(images) != sections:
        raise RuntimeError(f"the reel brought {len(images)} images for {sections} sections")
    return {"total_s": total, "sections_s": found, "painting_s": total - found}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=210.0, help="length of the synthetic song")
    parser.add_argument("--sections", type=int, default=8, help="sections of the reel (exactly)")
    parser.add_argument("--min-section-seconds", type=int, default=0,
                        help="the reel's shortest section (0: the orchestrator's default, 8 s)")
    parser.add_argument("--size", type=int, default=128, help="image width = height")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps")
    parser.add_argument("--repeat", type=int, default=2, help="timed rounds (min and median)")
    add_stack_arguments(parser)
    return parser.parse_args(argv)


def measure(batched: Client, one_by_one: Client, song: bytes, options: dict[str, Any], args: argparse.Namespace,
            cache_dir: Path) -> dict[str, list[dict[str, float]]]:
    """Warm-up, then ``repeat`` rounds: image and reel cold, then the painting batched and one by one (in
    turns first), both orchestrators reading the audio the cold reel left in their shared cache."""
    runs: dict[str, list[dict[str, float]]] = {"image": [], "reel": [], "batched": [], "one_by_one": []}

    if args.warm_up:
        start = time.perf_counter()
        image_job(batched, song, {**options, "steps": 1})
        progress(f"warm-up job (1 step) {time.perf_counter() - start:.1f} s")
    for i in range(args.repeat):
        clear_cache(cache_dir)
        runs["image"].append(image_job(batched, song, options))
        clear_cache(cache_dir)
        runs["reel"].append(reel_job(batched, song, options, args.sections, args.min_section_seconds))
        progress(f"round {i + 1}: image {runs['image'][-1]['total_s']:.1f} s, reel {runs['reel'][-1]['total_s']:.1f} s")
        order = [("batched", batched), ("one_by_one", one_by_one)]
        for name, client in order if i % 2 == 0 else reversed(order):
            runs[name].append(reel_job(client, song, options, args.sections, args.min_section_seconds))
            progress(f"round {i + 1}: painting {name} {runs[name][-1]['painting_s']:.1f} s")
    return runs


def summary(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    def col(path: str, key: str) -> list[float]:
        return [round(r[key], 3) for r in runs[path]]

    image, reel = col("image", "total_s"), col("reel", "total_s")
    batched, single = col("batched", "painting_s"), col("one_by_one", "painting_s")
    return {
        "statistic": "min over repeats (medians alongside)",
        "image_total_s": image, "reel_total_s": reel, "reel_sections_found_s": col("reel", "sections_s"),
        "reel_extra_over_image_s": round(min(reel) - min(image), 3),
        "reel_over_image": round(min(reel) / min(image), 4),
        "paint_batched_s": batched, "paint_one_by_one_s": single,
        "one_by_one_over_batched": round(min(single) / min(batched), 4),
        "one_by_one_over_batched_median": round(statistics.median(single) / statistics.median(batched), 4),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine, load_start = cpu_model(), os.getloadavg()
    params = {
        "models": "tiny profile" if args.tiny else "full-size random weights", "song_seconds": args.seconds,
        "song_format": "WAV float32 44.1 kHz stereo", "sections": args.sections,
        "min_section_seconds": args.min_section_seconds or "orchestrator's default", "openl3_hop_s": args.hop,
        "width": args.size, "height": args.size, "steps": args.steps, "guidance": args.guidance,
        "repeat": args.repeat, "warm_up": args.warm_up, "torch_threads": torch.get_num_threads(), "device": "cpu",
        "allocator": heap_allocator(),
    }
    print(f"machine: {machine}, {os.cpu_count()} CPUs, load average {load_start[0]:.2f} at start")
    print("parameters: " + ", ".join(f"{k}={v}" for k, v in params.items()), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-reel-"))
    cache = tmp / "cache"  # both orchestrators' (the same services: the same keys)
    options = {"seed": 7, "steps": args.steps, "width": args.size, "height": args.size, "guidance": args.guidance}
    try:
        overrides = stack_overrides(args, args.root or tmp / "models", cache)
        start = time.perf_counter()
        with LocalStack(overrides) as stack:
            targets: dict[str, Any] = {f"{kind}_target": stack.services[kind].address for kind in MODEL_KINDS}
            single = start_service(DEFINITION, OrchestratorConfig(port=0, cache_dir=cache, reel_max_batch=1, **targets),
                                   wait=True, wait_timeout=120)
            progress(f"stack up in {time.perf_counter() - start:.0f} s at {stack.address}")
            try:
                with Client(stack.address) as batched, Client(single.address) as one_by_one:
                    max_batch = batched.describe().generator.max_batch
                    params["generator_max_batch"] = max_batch
                    params["batch_size"] = min(max(1, max_batch), args.sections)  # what the first orchestrator paints
                    runs = measure(batched, one_by_one, song_wav(args.seconds), options, args, cache)
            finally:
                single.stop(0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures = summary(runs)
    print(f"\n{'seconds (min over rounds)':34} {'min':>9}  runs")
    rows = (("image, cold", "image_total_s"), ("reel, cold", "reel_total_s"),
            ("reel painting, batched", "paint_batched_s"), ("reel painting, one by one", "paint_one_by_one_s"))
    for name, key in rows:
        print(f"{name:34} {min(figures[key]):9.3f}  " + " ".join(f"{v:.3f}" for v in figures[key]))
    print(f"\nreel - image {figures['reel_extra_over_image_s']:.1f} s; one by one / batched "
          f"{figures['one_by_one_over_batched']:.3f} (batches of {params['batch_size']})")
    load_end = os.getloadavg()
    print(json.dumps({"bench": "reel", "machine": machine, "cpus": os.cpu_count(),
                      "load_avg_1m_start": round(load_start[0], 2), "load_avg_1m_end": round(load_end[0], 2),
                      **params, **figures}))
