"""How close each scheduler and step count gets to the converged image, with the generator's own backend.

Full-size SD 1.5 UNet + VAE with random weights (``bench_vision.py``), written as a pipeline folder and
loaded by ``StableDiffusionBackend`` exactly as the service loads a model (its precision, its
scheduler table, its float32 initial noise and float32 VAE decode). Every variant paints the same
prompt embeddings from the same seed. The *converged* image is the end of the deterministic sampling
ODE that every scheduler approximates, here the first ``--reference`` (default PNDM at 100 steps;
a second one, default DPM-Solver++ 2M at 100 steps, says whether two solvers agree on that end).
Each variant is compared with it and with the shipped default (``--default``, PNDM at 30 steps):
8-bit PSNR and the largest pixel difference; and its wall time.

Random weights paint no picture, so this measures how far a sampler is from the end of the same
ODE, not how good an image looks; what carries over to a trained model is the ranking, not the dB.

    python scripts/probe_schedulers.py --size 256 --variants pndm:20 dpm++2m:20 dpm++2m_karras:20
    python scripts/probe_schedulers.py --size 512 --reference pndm:30 --variants pndm:20

Prints one line per variant and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_vision import sd15_unet, sd15_vae  # a sibling script (scripts/ is on sys.path when run)

from audiomemory.generator.backends import ImageRequest
from audiomemory.generator.backends.stable_diffusion import StableDiffusionBackend, save_pipeline
from audiomemory.generator.config import GeneratorConfig
from audiomemory.runtime.allocator import heap_allocator

SEED = 1234


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def parse_variant(text: str) -> tuple[str, int]:
    name, _, steps = text.rpartition(":")
    return name, int(steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="image width and height (default 256)")
    ap.add_argument("--reference", nargs="+", default=["pndm:100", "dpm++2m:100"], help="converged solutions")
    ap.add_argument("--default", default="pndm:30", help="the shipped default, compared with every variant")
    ap.add_argument("--variants", nargs="+", default=["pndm:20", "dpm++2m:25", "dpm++2m:20", "dpm++2m:15"])
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--prompts", type=int, default=1, help="different prompt embeddings (and seeds) to average")
    ap.add_argument("--first-prompt", type=int, default=0, help="number of the first prompt (to add prompts later)")
    args = ap.parse_args()

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="probe-schedulers-") as tmp:
        save_pipeline(Path(tmp), sd15_unet(), sd15_vae())
        backend = StableDiffusionBackend(GeneratorConfig(model=tmp))
        backend.load()
        print(f"allocator {heap_allocator()}; UNet {backend.describe().dtype}; {args.size}²; "
              f"schedulers {backend.schedulers}", flush=True)

        def paint(variant: str, k: int) -> tuple[np.ndarray, float]:
            name, steps = parse_variant(variant)
            gen = np.random.default_rng(k)
            request = ImageRequest(
                prompt_embeds=gen.standard_normal((1, 77, 768)).astype(np.float32),
                negative_prompt_embeds=gen.standard_normal((1, 77, 768)).astype(np.float32),
                seed=SEED + k, steps=steps, guidance=args.guidance, width=args.size, height=args.size,
                scheduler=name,
            )
            start = time.perf_counter()
            image = backend.generate(request, on_step=lambda done, total: None, should_stop=lambda: False)
            return np.asarray(image.image), time.perf_counter() - start

        rows: dict[str, dict[str, Any]] = {}
        for k in range(args.first_prompt, args.first_prompt + args.prompts):
            images = {}
            for variant in dict.fromkeys([*args.reference, args.default, *args.variants]):  # each once
                images[variant], wall = paint(variant, k)
                pixels = images[variant]
                row = rows.setdefault(variant, {"wall_s": [], "psnr_vs_converged": [], "psnr_vs_default": [],
                                                "max_diff_vs_converged": [], "pixel_std": []})
                row["wall_s"].append(wall)
                row["pixel_std"].append(float(pixels.std()))
                print(f"  prompt {k} {variant}: {wall:.1f} s, pixel mean {pixels.mean():.1f} std {pixels.std():.1f}",
                      flush=True)
            converged = images[args.reference[0]]
            for variant, pixels in images.items():
                rows[variant]["psnr_vs_converged"].append(psnr(pixels, converged))
                rows[variant]["psnr_vs_default"].append(psnr(pixels, images[args.default]))
                rows[variant]["max_diff_vs_converged"].append(
                    int(np.abs(pixels.astype(int) - converged.astype(int)).max()))

        summary = {}
        for variant, row in rows.items():
            summary[variant] = {key: round(float(np.mean(vals)), 2) for key, vals in row.items()}
            s = summary[variant]
            print(f"{variant:>16}: {s['wall_s']:7.1f} s  PSNR vs {args.reference[0]} {s['psnr_vs_converged']:6.2f} dB "
                  f"(max diff {s['max_diff_vs_converged']:.0f})  vs {args.default} {s['psnr_vs_default']:6.2f} dB",
                  flush=True)
        print(json.dumps({"size": args.size, "prompts": args.prompts, "allocator": heap_allocator(),
                          "reference": args.reference, "default": args.default, "variants": summary}))


if __name__ == "__main__":
    main()
