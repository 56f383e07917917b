"""bfloat16 vs float32 for SD 1.5 on CPU: speed of a UNet step and a VAE decode, and image fidelity.

Full-size random-weight SD 1.5 UNet (860 M parameters, built as in ``bench_vision.py``) and VAE, in
memory. All variants run in ONE process, interleaved (A, B, C, A, B, C, ...), and each figure is the
median over the repeats, so drift in a shared machine's load hits every variant alike.

Variants of the UNet call (classifier-free guidance: batch 2, prompt embeddings [2, 77, 768]):

- ``fp32``: float32 weights and activations (what the backend runs on CPU today);
- ``autocast``: float32 weights, ``torch.autocast("cpu", dtype=torch.bfloat16)`` around the call;
- ``bf16``: weights and activations in bfloat16 (``unet.to(torch.bfloat16)``);
- ``bf16_cl``: ``bf16`` with the weights and input in channels_last.

Fidelity (``--fidelity``): the whole pipeline (its PNDM schedule, guidance 7.5, same embeddings,
same float32 initial noise from the same seed), latents decoded by the VAE in float32, 8-bit image
compared with the ``fp32`` image: PSNR in dB and the largest absolute pixel difference.

Prints one line per result and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import statistics
import time
from typing import Any

import numpy as np
import torch
from bench_vision import sd15_unet, sd15_vae  # a sibling script (scripts/ is on sys.path when run)

from audiomemory.generator.backends.stable_diffusion import embeds_pipeline
from audiomemory.runtime.allocator import heap_allocator

SEED = 1234


def variants(unet32: Any) -> dict[str, tuple[Any, torch.dtype, bool, bool]]:
    """name → (unet, input dtype, autocast?, channels_last?)."""
    unet16 = copy.deepcopy(unet32).to(torch.bfloat16)
    unet16_cl = copy.deepcopy(unet16).to(memory_format=torch.channels_last)
    return {
        "fp32": (unet32, torch.float32, False, False),
        "autocast": (unet32, torch.float32, True, False),
        "bf16": (unet16, torch.bfloat16, False, False),
        "bf16_cl": (unet16_cl, torch.bfloat16, False, True),
    }


def autocast(on: bool) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


def time_unet(table: dict[str, Any], size: int, embeds: torch.Tensor, repeat: int) -> dict[str, Any]:
    """Per variant: median wall and CPU seconds of one UNet call (batch 2), and the median over
    rounds of fp32's time / the variant's time in the same round (the load drifts between rounds)."""
    gen = torch.Generator("cpu").manual_seed(SEED)
    latents = torch.randn(2, 4, size // 8, size // 8, generator=gen)
    t = torch.tensor(500)
    wall: dict[str, list[float]] = {name: [] for name in table}
    cpu: dict[str, list[float]] = {name: [] for name in table}
    for rep in range(repeat + 1):  # round 0 is warm-up (fresh activation memory at this size)
        for name, (unet, dtype, ac, cl) in table.items():
            x = latents.to(dtype)
            x = x.to(memory_format=torch.channels_last) if cl else x
            start, start_cpu = time.perf_counter(), time.process_time()
            with torch.inference_mode(), autocast(ac):
                unet(x, t, encoder_hidden_states=embeds.to(dtype), return_dict=False)
            if rep:
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        print(f"  {size}² round {rep}: " + ", ".join(f"{n} {v[-1]:.2f}s" for n, v in wall.items() if v), flush=True)
    return {
        name: {
            "wall_s": statistics.median(wall[name]),
            "cpu_s": statistics.median(cpu[name]),
            "speedup_wall": statistics.median(f / v for f, v in zip(wall["fp32"], wall[name], strict=True)),
            "speedup_cpu": statistics.median(f / v for f, v in zip(cpu["fp32"], cpu[name], strict=True)),
        }
        for name in table
    }


def time_vae(vae32: Any, size: int, repeat: int) -> dict[str, float]:
    """Median seconds of one VAE decode (batch 1) in float32 and in bfloat16, interleaved."""
    vae16 = copy.deepcopy(vae32).to(torch.bfloat16)
    z = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator("cpu").manual_seed(SEED))
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for rep in range(repeat + 1):
        for name, vae, dtype in (("fp32", vae32, torch.float32), ("bf16", vae16, torch.bfloat16)):
            start = time.perf_counter()
            with torch.inference_mode():
                vae.decode(z.to(dtype), return_dict=False)
            if rep:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def render(unet: Any, vae: Any, dtype: torch.dtype, ac: bool, size: int, steps: int,
           embeds: torch.Tensor) -> np.ndarray:
    """The pipeline's image as uint8 [H, W, 3]: same noise (float32, then cast), VAE in float32."""
    from diffusers import PNDMScheduler

    scheduler = PNDMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", skip_prk_steps=True, set_alpha_to_one=False,
                              steps_offset=1)
    pipe = embeds_pipeline(unet, vae, scheduler)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator("cpu").manual_seed(SEED))
    with torch.inference_mode(), autocast(ac):
        latents = pipe(prompt_embeds=embeds[:1].to(dtype), negative_prompt_embeds=embeds[1:].to(dtype),
                       latents=noise.to(dtype), num_inference_steps=steps, guidance_scale=7.5,
                       width=size, height=size, output_type="latent", return_dict=False)[0]
    with torch.inference_mode():
        image = vae.decode(latents.float() / vae.config.scaling_factor, return_dict=False)[0]
    pil = pipe.image_processor.postprocess(image, output_type="pil", do_denormalize=[True])[0]
    return np.asarray(pil)


def time_pipeline(table: dict[str, Any], vae: Any, size: int, steps: int, embeds: torch.Tensor,
                  repeat: int) -> dict[str, Any]:
    """The whole pipeline (PNDM steps + float32 decode) per variant, interleaved: median seconds and
    the median over rounds of fp32's time / the variant's (checks the UNet gain survives the loop)."""
    names = ("fp32", "bf16")
    wall: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeat):
        for name in names:
            unet, dtype, ac, _cl = table[name]
            start = time.perf_counter()
            render(unet, vae, dtype, ac, size, steps, embeds)
            wall[name].append(time.perf_counter() - start)
        print(f"  {size}² pipeline round {rep}: " + ", ".join(f"{n} {v[-1]:.2f}s" for n, v in wall.items()), flush=True)
    return {name: {"wall_s": statistics.median(wall[name]),
                   "speedup_wall": statistics.median(f / v for f, v in zip(wall["fp32"], wall[name], strict=True))}
            for name in names}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def fidelity(table: dict[str, Any], vae: Any, size: int, steps: int, embeds: torch.Tensor) -> dict[str, Any]:
    images = {}
    for name, (unet, dtype, ac, _cl) in table.items():
        if name == "bf16_cl":
            continue  # the same arithmetic as bf16 (memory layout only)
        start = time.perf_counter()
        images[name] = render(unet, vae, dtype, ac, size, steps, embeds)
        print(f"  {size}² {steps} steps {name}: {time.perf_counter() - start:.1f} s", flush=True)
    ref = images["fp32"]
    out: dict[str, Any] = {"size": size, "steps": steps, "fp32_mean_pixel": float(ref.mean())}
    for name, img in images.items():
        if name != "fp32":
            diff = np.abs(img.astype(int) - ref.astype(int))
            out[name] = {"psnr_db": psnr(img, ref), "max_abs_diff": int(diff.max()),
                         "mean_abs_diff": float(diff.mean())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--speed", action="store_true", help="time UNet calls and VAE decodes")
    parser.add_argument("--pipeline", type=int, default=0, help="steps for whole-pipeline timing (0: none)")
    parser.add_argument("--fidelity", type=int, nargs="*", default=[], help="steps for fidelity runs")
    args = parser.parse_args()
    torch.manual_seed(0)
    unet32, vae = sd15_unet().eval(), sd15_vae().eval()
    table = variants(unet32)
    embeds = torch.randn(2, 77, 768, generator=torch.Generator("cpu").manual_seed(SEED))
    summary: dict[str, Any] = {"bench": "bf16", "allocator": heap_allocator(), "threads": torch.get_num_threads(),
                               "torch": torch.__version__, "unet_s": {}, "vae_s": {}, "pipeline_s": {},
                               "fidelity": []}
    for size in args.sizes:
        if args.speed:
            unet_s = time_unet(table, size, embeds, args.repeat)
            vae_s = time_vae(vae, size, max(1, args.repeat - 1))
            summary["unet_s"][size], summary["vae_s"][size] = unet_s, vae_s
            for n, r in unet_s.items():
                print(f"{size}² UNet call {n}: {r['wall_s']:.3f} s wall (x{r['speedup_wall']:.2f}), "
                      f"{r['cpu_s']:.3f} s CPU (x{r['speedup_cpu']:.2f})", flush=True)
            print(f"{size}² VAE decode s: fp32 {vae_s['fp32']:.3f}, bf16 {vae_s['bf16']:.3f}", flush=True)
        if args.pipeline:
            summary["pipeline_s"][size] = time_pipeline(table, vae, size, args.pipeline, embeds, args.repeat)
            print(f"{size}² pipeline: {json.dumps(summary['pipeline_s'][size])}", flush=True)
        for steps in args.fidelity:
            result = fidelity(table, vae, size, steps, embeds)
            summary["fidelity"].append(result)
            print(json.dumps(result), flush=True)
    summary["load_average_1m_at_end"] = os.getloadavg()[0]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
