"""Benchmark the vision services on full-size random-weight models (same compute as the real ones).

Writes, under a temporary folder, an SD 1.5-shaped pipeline (UNet 860 M parameters, VAE, PNDM
schedule) and a CLIP ViT-L/14 text model with the real CLIP tokenizer, all random weights saved
with ``save_pretrained``; starts the generator and text encoder services on them through the
normal loading code; then measures, in one run on one machine:

- UNet seconds per denoising step (classifier-free guidance on, so batch 2 as in production, DDIM:
  one UNet call per step) at 256² and 512², in-process (``backend.generate``) and through the
  service (``Generate`` over loopback gRPC, timed from the client's progress events), and the ratio;
- whole-call seconds (steps + VAE decode + PNG) both ways;
- CLIP-L encode of a batch of 2 (lyrics + empty negative prompt), in-process and through gRPC.

Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import torch

from audiomemory import profiles
from audiomemory.bench.common import cpu_model
from audiomemory.bench.models import write_full_size
from audiomemory.generator.backends import GenerationStopped, ImageRequest
from audiomemory.generator.backends.stable_diffusion import StableDiffusionBackend
from audiomemory.generator.config import GeneratorConfig
from audiomemory.generator.service import DEFINITION as GENERATOR
from audiomemory.runtime.allocator import heap_allocator
from audiomemory.runtime.backend import Backend
from audiomemory.runtime.codec import to_tensor
from audiomemory.runtime.service import RunningService, start_service
from audiomemory.text_encoder.backends.clip import ClipBackend
from audiomemory.text_encoder.config import TextEncoderConfig
from audiomemory.text_encoder.service import DEFINITION as TEXT_ENCODER
from audiomemory.v1 import generator_pb2, generator_pb2_grpc, text_encoder_pb2, text_encoder_pb2_grpc

LYRICS = "hold the light, we were young under neon rain, hold the light, hold the light"


def step_seconds(stamps: list[float]) -> float:
    """Median time between consecutive step events (the first step also pays the loop's setup)."""
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.median(gaps) if gaps else float("nan")


def in_process(backend: StableDiffusionBackend, request: ImageRequest) -> tuple[float, float, float]:
    """One ``backend.generate`` after a one-step warm-up: (whole call s, wall s per step, CPU s per step)."""
    # Warm-up at this size, stopped after one step (no decode): the first pass at a new size pays
    # page faults for fresh activation memory, which would otherwise land on whichever side runs first.
    warm: list[int] = []
    with contextlib.suppress(GenerationStopped):
        backend.generate(request, lambda step, total: warm.append(step), lambda: bool(warm))
    stamps: list[float] = []
    cpu: list[float] = []

    def stamp() -> None:
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())

    start = time.perf_counter()
    backend.generate(request, lambda step, total: stamp(), lambda: False)
    return time.perf_counter() - start, step_seconds(stamps), step_seconds(cpu)


def bench_generate(service: RunningService, embeds: np.ndarray, size: int, steps: int) -> dict[str, float]:
    backend = service.backend
    assert isinstance(backend, StableDiffusionBackend)
    request = ImageRequest(
        prompt_embeds=embeds[:1],
        negative_prompt_embeds=embeds[1:],
        seed=0,
        steps=steps,
        guidance=7.5,
        width=size,
        height=size,
        scheduler="ddim",
    )
    local_total, local_step, local_cpu = in_process(backend, request)
    wire = generator_pb2.GenerateRequest(
        prompt_embeds=to_tensor(embeds[:1]),
        negative_prompt_embeds=to_tensor(embeds[1:]),
        seed=0,
        steps=steps,
        guidance=7.5,
        width=size,
        height=size,
        scheduler="ddim",
    )
    stamps: list[float] = []
    cpu: list[float] = []

    def stamp() -> None:
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())

    png = 0
    with grpc.insecure_channel(service.address) as channel:
        stub = generator_pb2_grpc.GeneratorStub(channel)
        start = time.perf_counter()
        for response in stub.Generate(wire, timeout=3600):
            if response.WhichOneof("item") == "progress":
                stamp()
            else:
                png += len(response.image.png)
        remote_total = time.perf_counter() - start
    remote_step, remote_cpu = step_seconds(stamps), step_seconds(cpu)
    return {
        "size": size,
        "steps": steps,
        "in_process_s_per_step": local_step,
        "service_s_per_step": remote_step,
        "ratio_service_over_in_process": remote_step / local_step,
        # CPU seconds of this whole process (the server runs in it) per step: less sensitive than
        # wall time to other work on a shared machine.
        "in_process_cpu_s_per_step": local_cpu,
        "service_cpu_s_per_step": remote_cpu,
        "cpu_ratio_service_over_in_process": remote_cpu / local_cpu,
        "in_process_call_s": local_total,
        "service_call_s": remote_total,
        "png_bytes": png,
    }


def bench_encode(service: RunningService, repeat: int) -> dict[str, float]:
    backend = service.backend
    assert isinstance(backend, ClipBackend)
    texts = [LYRICS, ""]
    local: list[float] = []
    remote: list[float] = []
    with grpc.insecure_channel(service.address) as channel:
        stub = text_encoder_pb2_grpc.TextEncoderStub(channel)
        for _ in range(2):  # warm-up: first calls page in the memory-mapped weights
            backend.encode(texts)
            list(stub.Encode(text_encoder_pb2.EncodeRequest(texts=texts), timeout=600))
        # Interleaved, so drift in the shared machine's load hits both sides alike.
        for _ in range(repeat):
            start = time.perf_counter()
            backend.encode(texts)
            local.append(time.perf_counter() - start)
            start = time.perf_counter()
            list(stub.Encode(text_encoder_pb2.EncodeRequest(texts=texts), timeout=600))
            remote.append(time.perf_counter() - start)
    return {
        "batch": 2,
        "in_process_s": statistics.median(local),
        "service_s": statistics.median(remote),
        "ratio_service_over_in_process": statistics.median(remote) / statistics.median(local),
    }


def bench_size(generator: RunningService, embeds: np.ndarray, size: int, steps: int) -> dict[str, float]:
    """``bench_generate`` at one size, printed."""
    result = bench_generate(generator, embeds, size, steps)
    print(
        f"UNet {size}x{size}, CFG batch 2: {result['in_process_s_per_step']:.2f} s/step in-process, "
        f"{result['service_s_per_step']:.2f} s/step via gRPC (x{result['ratio_service_over_in_process']:.3f}); "
        f"CPU s/step {result['in_process_cpu_s_per_step']:.2f} vs {result['service_cpu_s_per_step']:.2f} "
        f"(x{result['cpu_ratio_service_over_in_process']:.3f}); "
        f"whole call {result['in_process_call_s']:.1f} s vs {result['service_call_s']:.1f} s",
        flush=True,
    )
    return result


def write_vision_models(root: Path, tiny: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The text encoder's and the generator's config overrides: full-size random SD 1.5 and CLIP-L, or tiny."""
    if tiny:
        return profiles.write_tiny_for("text_encoder", root / "text"), profiles.write_tiny_for("generator", root / "sd")
    sd, clip = write_full_size(root)
    return {"model": str(clip)}, {"model": str(sd)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=3, help="denoising steps per run (>= 2 for a per-step time)")
    parser.add_argument("--encode-repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--tiny", action="store_true", help="the tiny profile's models (a quick check of this script)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    root = Path(tempfile.mkdtemp(prefix="bench-vision-"))
    services: list[RunningService] = []
    try:
        start = time.perf_counter()
        text_models, generator_models = write_vision_models(root, args.tiny)
        print(f"wrote {'tiny' if args.tiny else 'full-size'} random models in {time.perf_counter() - start:.1f} s",
              flush=True)
        start = time.perf_counter()
        common: dict[str, Any] = {"port": 0, "device": "cpu", "torch_threads": args.threads}
        text = start_service(TEXT_ENCODER, TextEncoderConfig(**text_models, **common), wait=True)
        services.append(text)
        generator = start_service(GENERATOR, GeneratorConfig(**generator_models, **common), wait=True)
        services.append(generator)
        print(f"loaded both services in {time.perf_counter() - start:.1f} s", flush=True)

        encode = bench_encode(text, args.encode_repeat)
        print(
            f"CLIP-L encode, batch 2: {encode['in_process_s'] * 1000:.0f} ms in-process, "
            f"{encode['service_s'] * 1000:.0f} ms via gRPC (x{encode['ratio_service_over_in_process']:.2f})",
            flush=True,
        )
        backend = text.backend
        assert isinstance(backend, ClipBackend)
        embeds = backend.encode([LYRICS, ""]).embeddings
        # Warm-up: one small run pages in every UNet/VAE weight before anything is timed.
        bench_generate(generator, embeds, 64, 2)
        runs = [bench_size(generator, embeds, size, args.steps) for size in args.sizes]
        summary = {
            "bench": "vision",
            "models": "tiny profile" if args.tiny else "full-size random weights",
            "cpu": cpu_model(),
            "allocator": heap_allocator(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1m_at_end": os.getloadavg()[0],  # shared machine: others' work competes
            "device": "cpu",
            # What the generator resolved (precision "auto" is bfloat16 on a CPU with avx512_bf16).
            "dtype": cast(Backend, generator.backend).describe().dtype,
            "scheduler": "ddim",
            "unet": runs,
            "clip_l_encode": encode,
        }
        print(json.dumps(summary))
    finally:
        for service in services:
            service.stop(grace=1)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
