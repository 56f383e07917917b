"""CUDA paths (float16 compute, float32 VAE decode); skipped where no GPU is present."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from audiomemory.generator.backends import ImageRequest
from audiomemory.generator.backends.stable_diffusion import StableDiffusionBackend
from audiomemory.generator.config import GeneratorConfig
from audiomemory.text_encoder.backends.clip import ClipBackend
from audiomemory.text_encoder.config import TextEncoderConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_runs_float16_and_matches_cpu_closely(tiny_clip: dict[str, Any], tiny_sd: dict[str, Any]) -> None:
    cpu_text = ClipBackend(TextEncoderConfig(device="cpu", **tiny_clip))
    gpu_text = ClipBackend(TextEncoderConfig(device="cuda", **tiny_clip))
    cpu_text.load()
    gpu_text.load()
    assert gpu_text.describe().dtype == "float16"
    texts = ["neon rain", ""]
    cpu_embeds = cpu_text.encode(texts).embeddings
    gpu_embeds = gpu_text.encode(texts).embeddings
    assert gpu_embeds.dtype == np.float32  # float32 on the host whatever the compute dtype
    np.testing.assert_allclose(gpu_embeds, cpu_embeds, atol=2e-2, rtol=2e-2)

    generator = StableDiffusionBackend(GeneratorConfig(device="cuda", **tiny_sd))
    generator.load()
    info = generator.describe()
    assert (info.dtype, info.extra["vae_dtype"]) == ("float16", "float32")
    assert generator.pipeline.vae.dtype == torch.float32
    request = ImageRequest(
        prompt_embeds=gpu_embeds[:1], negative_prompt_embeds=gpu_embeds[1:], seed=5, steps=3, guidance=7.5,
        width=64, height=64, scheduler="ddim",
    )
    image = np.asarray(generator.generate(request, lambda s, n: None, lambda: False).image)
    assert image.shape == (64, 64, 3) and image.std() > 1.0  # not NaN-turned-black
