"""One-off probe: is item i of a generator batch bit for bit the image painted alone, and is the batch faster?

    python scripts/probe_batch.py --model DIR [--size 256] [--batch 4] [--steps 2] [--scheduler pndm]
        [--guidance 7.5] [--rounds 2] [--precision float32] [--batch-unet batched]

Loads the stable-diffusion backend on the CPU from a pipeline folder (full-size random weights:
``audiomemory.bench.models.write_models``; the tiny profile's), paints B prompts one by one and as one batch
(``--batch-unet``), and also as a *raw* batch — the whole UNet batched, the small products too
(``batching.denoising_batch`` off) — to show what the item-by-item products fix. Prints each way's wall and
process CPU seconds per round (best of the rounds) and, per item, whether the 8-bit image equals the one painted
alone (else the largest pixel difference and the PSNR). BENCHMARKS.md "Batched painting" has its figures.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from audiomemory.generator.backends import GeneratedImage, ImageRequest, batching
from audiomemory.generator.backends.stable_diffusion import StableDiffusionBackend
from audiomemory.generator.config import GeneratorConfig


@contextlib.contextmanager
def _raw(items: int, rows: int) -> Iterator[None]:
    yield


def _timed(paint: Callable[[], list[GeneratedImage]]) -> tuple[list[GeneratedImage], float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    images = paint()
    return images, time.perf_counter() - wall, time.process_time() - cpu


def _compare(name: str, alone: list[GeneratedImage], other: list[GeneratedImage]) -> None:
    for i, (a_image, b_image) in enumerate(zip(alone, other, strict=True)):
        a = np.asarray(a_image.image).astype(np.int32)
        b = np.asarray(b_image.image).astype(np.int32)
        mse = float(((a - b) ** 2).mean())
        psnr = "inf" if mse == 0 else f"{10 * np.log10(255**2 / mse):.1f}"
        print(f"  {name} item {i}: identical {np.array_equal(a, b)}, largest pixel difference "
              f"{int(np.abs(a - b).max())}, PSNR {psnr} dB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--scheduler", default="pndm")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--batch-unet", default="batched")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = GeneratorConfig(device="cpu", model=args.model, precision=args.precision, max_batch=args.batch,
                             batch_unet=args.batch_unet)
    backend = StableDiffusionBackend(config)
    backend.load()
    rng = np.random.default_rng(0)
    dim = backend.cross_attention_dim
    request = ImageRequest(
        prompt_embeds=rng.standard_normal((args.batch, 77, dim)).astype(np.float32),
        negative_prompt_embeds=rng.standard_normal((1, 77, dim)).astype(np.float32), seed=0, steps=args.steps,
        guidance=args.guidance, width=args.size, height=args.size, scheduler=args.scheduler,
        seeds=tuple(range(100, 100 + args.batch)),
    )
    quiet: Any = lambda *a: None  # noqa: E731
    never: Callable[[], bool] = lambda: False  # noqa: E731
    backend.generate(request.item(0), quiet, never)  # warm-up: the kernels' first-call setup
    ways: dict[str, Callable[[], list[GeneratedImage]]] = {
        "alone": lambda: [backend.generate(request.item(i), quiet, never) for i in range(args.batch)],
        "batch": lambda: backend.generate_batch(request, quiet, never),
    }
    times: dict[str, list[tuple[float, float]]] = {"alone": [], "batch": [], "raw": []}
    images: dict[str, list[GeneratedImage]] = {}
    real = batching.denoising_batch
    for _ in range(args.rounds):
        for name, paint in ways.items():
            images[name], wall, cpu = _timed(paint)
            times[name].append((wall, cpu))
        batching.denoising_batch = _raw
        try:
            images["raw"], wall, cpu = _timed(ways["batch"])
        finally:
            batching.denoising_batch = real
        times["raw"].append((wall, cpu))
    calls = images["alone"][0].total_steps
    print(f"{args.size} px, B = {args.batch}, {args.steps} steps ({calls} UNet calls an item), {args.scheduler}, "
          f"guidance {args.guidance:g}, {args.precision}, batch_unet {backend.batch_unet(request)}, "
          f"{args.threads} threads")
    best = {name: min(t[0] for t in rounds) for name, rounds in times.items()}
    for name, rounds in times.items():
        listed = ", ".join(f"{w:.2f} s (CPU {c:.2f} s)" for w, c in rounds)
        print(f"  {name:5s}: {listed}; best {best[name]:.2f} s = {args.batch * calls / best[name]:.3f} item-steps/s")
    print(f"  batch {best['alone'] / best['batch']:.2f}x one by one; raw batch {best['alone'] / best['raw']:.2f}x")
    _compare("batch", images["alone"], images["batch"])
    _compare("raw batch", images["alone"], images["raw"])


if __name__ == "__main__":
    main()
