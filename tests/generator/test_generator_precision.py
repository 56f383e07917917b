"""The generator's precision setting: how ``auto`` resolves, and bfloat16 against float32 on the tiny model."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
import torch

from audiomemory.generator.backends import ImageRequest
from audiomemory.generator.backends.stable_diffusion import StableDiffusionBackend, compute_dtype
from audiomemory.generator.config import GeneratorConfig

#: Measured on the tiny model (64 px, seed 3, guidance 5): bfloat16 vs float32 8-bit images at
#: 49.2-52.9 dB PSNR (max pixel diff 2-5) over ddim/pndm/euler_a/dpm++2m at 3 and 10 steps; the
#: float32 image of another seed is at 13.3 dB. Full-size SD 1.5 at 512 px, 4 PNDM steps: 50.3 dB.
#: 40 dB leaves room for other CPUs' kernels and still fails on a wrong image or a broken cast.
PSNR_FLOOR_DB = 40.0


@pytest.fixture(scope="module")
def backends(tiny_sd: dict[str, Any]) -> dict[str, StableDiffusionBackend]:
    loaded = {}
    for precision in ("float32", "bfloat16"):
        loaded[precision] = StableDiffusionBackend(GeneratorConfig(device="cpu", precision=precision, **tiny_sd))
        loaded[precision].load()
    return loaded


def paint(backend: StableDiffusionBackend, seed: int = 3) -> bytes:
    """The PNG of one 3-step DDIM image (PNG as the service writes it)."""
    rng = np.random.default_rng(0)
    request = ImageRequest(
        prompt_embeds=rng.standard_normal((1, 77, 32)).astype(np.float32),
        negative_prompt_embeds=np.zeros((1, 77, 32), np.float32),
        seed=seed,
        steps=3,
        guidance=5.0,
        width=64,
        height=64,
        scheduler="ddim",
    )
    out = io.BytesIO()
    backend.generate(request, lambda s, n: None, lambda: False).image.save(out, format="PNG")
    return out.getvalue()


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.mark.parametrize(
    ("precision", "device", "flags", "expected"),
    [
        ("auto", "cpu", {"avx512f", "avx512_bf16"}, torch.bfloat16),
        ("auto", "cpu", {"amx_bf16"}, torch.bfloat16),
        ("auto", "cpu", {"avx512f", "avx512_vnni"}, torch.float32),  # bf16 would be emulated: slower
        ("auto", "cuda", set(), torch.float16),
        ("auto", "mps", {"avx512_bf16"}, torch.float32),
        ("float32", "cuda", set(), torch.float32),
        ("bfloat16", "cpu", set(), torch.bfloat16),  # asked for explicitly: honoured
    ],
)
def test_precision_resolves_to_a_dtype(precision: Any, device: str, flags: set[str], expected: torch.dtype) -> None:
    assert compute_dtype(precision, device, frozenset(flags)) == expected


def test_describe_reports_the_precision(backends: dict[str, StableDiffusionBackend]) -> None:
    for precision, backend in backends.items():
        info = backend.describe()
        assert (info.dtype, info.extra["precision"], info.extra["vae_dtype"]) == (precision, precision, "float32")
    assert backends["bfloat16"].pipeline.unet.dtype == torch.bfloat16
    assert backends["bfloat16"].pipeline.vae.dtype == torch.float32  # the decode stays float32


def test_same_seed_gives_the_same_png_in_each_precision_and_bf16_is_close_to_fp32(
    backends: dict[str, StableDiffusionBackend],
) -> None:
    fp32, bf16 = paint(backends["float32"]), paint(backends["bfloat16"])
    assert paint(backends["float32"]) == fp32 and paint(backends["bfloat16"]) == bf16
    assert fp32 != bf16  # the bf16 path really ran in bf16
    assert psnr(pixels(bf16), pixels(fp32)) >= PSNR_FLOOR_DB
