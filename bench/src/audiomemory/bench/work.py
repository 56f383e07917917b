"""The arithmetic a whole-song job asks for, and the fastest rates this CPU gives it: the job's floor.

FLOPs are counted by ``torch.utils.flop_counter`` (matrix products, convolutions, attention; the STFTs and the
element-wise work are not counted, so the floor is a lower bound) on the full-size architectures with random
weights (the count does not depend on them), one unit each: an htdemucs segment, an OpenL3 window, a guided SD
1.5 UNet call (two rows), a VAE decode. The units a job of ``--song-seconds`` asks for come from the services' own
rules, at the new settings (``bench/song.py``'s CPU deployment: the services' defaults) and at the reference's
(``REFERENCE``): the separator's segment and overlap, the encoder's hop rule over four stems, the scheduler's
timesteps. Rates: torch's float32 GEMM (4096²) and SD's 3×3 convolution (320 channels, 64², two rows), best of
five; the bfloat16 GEMM too where the CPU has native bf16. The floor is the work at the best float32 rate with
every core busy and nothing else costing (where the CPU has native bf16, whose units the defaults use there, also
at the bf16 GEMM's rate: ``floor_bf16_s``). ``--reference-seconds`` (a bench-song's measured reference) adds the
rate a ``--target`` speedup would need. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from audiomemory.audio_encoder.backends.openl3 import WINDOW, OpenL3Backend, _new_model, lean_forward
from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.audio_encoder.stream import frame_count
from audiomemory.bench.common import best_of, cpu_model, progress
from audiomemory.bench.models import sd15_unet, sd15_vae
from audiomemory.bench.song import REFERENCE
from audiomemory.generator.config import GeneratorConfig
from audiomemory.runtime.precision import NATIVE_BF16_FLAGS, cpu_flags
from audiomemory.separator.backends.demucs import HTDEMUCS_KWARGS, TINY_KWARGS
from audiomemory.separator.config import SeparatorConfig

STEMS = 4  # the encoder embeds the four stems
STAGES = ("separate", "embed", "denoise", "decode")


def flops(fn: Callable[[], Any]) -> float:
    """GFLOP of one call of ``fn`` as torch's counter sees it."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / 1e9


def unit_gflop(size: int, tiny: bool) -> dict[str, float]:
    """GFLOP of one unit of each stage (``tiny``: the tiny profile's architectures, for the suite's smoke run)."""
    from demucs.htdemucs import HTDemucs

    kwargs = TINY_KWARGS if tiny else HTDEMUCS_KWARGS
    separator = HTDemucs(**kwargs).eval()
    samples = int(float(kwargs["segment"]) * int(kwargs["samplerate"]))
    encoder = _new_model(AudioEncoderConfig(input_repr="mel128" if tiny else "mel256")).eval()
    latent = size // 8
    out = {"separate": flops(lambda: separator(torch.zeros(1, int(kwargs["audio_channels"]), samples))),
           "embed": flops(lambda: lean_forward(encoder, torch.zeros(1, 1, WINDOW), torch.float32, None))}
    unet = sd15_unet(tiny=tiny).eval()
    rows = torch.zeros(2, int(unet.config.in_channels), latent, latent)
    states = torch.zeros(2, 77, int(unet.config.cross_attention_dim))
    out["denoise"] = flops(lambda: unet(rows, torch.tensor([500.0, 500.0]), states))
    vae = sd15_vae().eval()
    out["decode"] = flops(lambda: vae.decode(torch.zeros(1, 4, latent, latent)))
    return out


def unet_calls(steps: int) -> int:
    """UNet calls of ``steps`` steps of SD 1.5's own scheduler (PNDM, PLMS only: one warm-up call more)."""
    from diffusers import PNDMScheduler

    scheduler: Any = PNDMScheduler(skip_prk_steps=True, steps_offset=1)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)


def units(seconds: float, settings: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many of each unit a ``seconds``-long song asks for at ``settings`` (per-kind config overrides)."""
    separator = SeparatorConfig(**settings.get("separator", {}))
    segment = separator.segment or float(HTDEMUCS_KWARGS["segment"])
    rate = int(HTDEMUCS_KWARGS["samplerate"])
    stride = int((1 - separator.overlap) * segment * rate)  # demucs' apply_model: one segment every stride
    encoder = OpenL3Backend(AudioEncoderConfig(**settings.get("audio_encoder", {})))
    generator = GeneratorConfig(**settings.get("generator", {}))
    return {"separate": math.ceil(seconds * rate / stride),
            "embed": STEMS * frame_count(round(seconds * 48000), encoder.hop_for(seconds)),
            "denoise": unet_calls(generator.default_steps), "decode": 1}


def best_rate(fn: Callable[[], Any], gflop: float, repeat: int = 5) -> float:
    """GFLOP/s of the fastest of ``repeat`` calls of ``fn`` (after one warm-up)."""
    with torch.no_grad():
        fn()
        return gflop / best_of(fn, repeat)


def rates(tiny: bool) -> dict[str, float]:
    """The fastest float32 GEMM and convolution rates here (bfloat16 GEMM too where native)."""
    n = 1024 if tiny else 4096
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = {"gemm_f32": best_rate(lambda: torch.mm(a, b), 2 * n**3 / 1e9)}
    conv, x = torch.nn.Conv2d(320, 320, 3, padding=1).eval(), torch.randn(2, 320, 64, 64)
    out["conv_f32"] = best_rate(lambda: conv(x), 2 * 2 * 320 * 320 * 9 * 64 * 64 / 1e9)
    if NATIVE_BF16_FLAGS & cpu_flags():
        a16, b16 = a.bfloat16(), b.bfloat16()
        out["gemm_bf16"] = best_rate(lambda: torch.mm(a16, b16), 2 * n**3 / 1e9)
    return {k: round(v, 1) for k, v in out.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--song-seconds", type=float, default=210.0, help="the song's length (bench-song's: 210)")
    parser.add_argument("--size", type=int, default=512, help="the image's side (pixels)")
    parser.add_argument("--reference-seconds", type=float, help="a measured reference time, for the needed rate")
    parser.add_argument("--target", type=float, default=8.0, help="the speedup the needed rate is for")
    parser.add_argument("--tiny", action="store_true", help="the tiny architectures and a small GEMM (the smoke)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    progress("counting one unit of each stage")
    per_unit = unit_gflop(args.size, args.tiny)
    progress("timing the float32 rates")
    measured = rates(args.tiny)
    best = max(measured["gemm_f32"], measured["conv_f32"])
    plans = {"new": units(args.song_seconds, {}), "reference": units(args.song_seconds, REFERENCE)}
    tflop = {name: {stage: round(n * per_unit[stage] / 1e3, 2) for stage, n in plan.items()}
             for name, plan in plans.items()}
    totals = {name: round(sum(stages.values()), 2) for name, stages in tflop.items()}
    report: dict[str, Any] = {
        "bench": "work", "machine": cpu_model(), "threads": torch.get_num_threads(), "song_seconds": args.song_seconds,
        "size": args.size, "models": "tiny" if args.tiny else "full-size", "units": plans,
        "gflop_per_unit": {k: round(v, 2) for k, v in per_unit.items()}, "tflop": tflop, "tflop_total": totals,
        "work_ratio": round(totals["reference"] / totals["new"], 3), "rates_gflops": measured,
        "floor_s": {name: round(total * 1e3 / best, 1) for name, total in totals.items()},
    }
    if "gemm_bf16" in measured:  # the defaults run bf16 (and int8) here: the floor at the bf16 rate, for reading
        report["floor_bf16_s"] = {name: round(total * 1e3 / measured["gemm_bf16"], 1) for name, total in totals.items()}
    if args.reference_seconds:
        needed = totals["new"] * 1e3 / (args.reference_seconds / args.target)
        report |= {"target": args.target, "needed_gflops": round(needed, 1),
                   "needed_over_best_f32": round(needed / best, 2)}
    print(f"{'stage':<10}{'GFLOP a unit':>14}{'new units':>11}{'new TFLOP':>11}{'ref units':>11}{'ref TFLOP':>11}")
    for stage in STAGES:
        print(f"{stage:<10}{per_unit[stage]:>14.1f}{plans['new'][stage]:>11}{tflop['new'][stage]:>11.2f}"
              f"{plans['reference'][stage]:>11}{tflop['reference'][stage]:>11.2f}")
    print(f"total: new {totals['new']} TFLOP, reference {totals['reference']} TFLOP; floors at {best} GFLOP/s: "
          f"{report['floor_s']['new']} s / {report['floor_s']['reference']} s")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
