"""The benchmarks' models: full-size random-weight ones (the published shapes, the real compute) and the tiny
profile's, for the smoke versions (``--tiny``) the test suite runs.

``write_models(root)`` writes htdemucs (published architecture), OpenL3 music/mel256/512, CLIP ViT-L/14's text
tower and SD 1.5's UNet + VAE under ``root`` (reused when already there) and returns each service's config
overrides; ``write_models(root, tiny=True)`` the tiny profile's five instead (``audiomemory.profiles``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from audiomemory import profiles
from audiomemory.audio_encoder.backends.openl3 import OpenL3Backend
from audiomemory.bench.common import progress
from audiomemory.generator.backends.stable_diffusion import save_pipeline
from audiomemory.separator.backends.demucs import HTDEMUCS_KWARGS, write_repo
from audiomemory.text_encoder.backends.clip import write_clip_tokenizer


def sd15_unet(*, tiny: bool = False) -> Any:
    """SD 1.5's UNet as published (860 M parameters), random weights from torch's current seed; ``tiny``: two
    small blocks with the same input and text shapes (latent 4 channels, cross-attention 768)."""
    from diffusers import UNet2DConditionModel

    if tiny:
        return UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=768, attention_head_dim=8,
        )
    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=8,
    )


def sd15_vae() -> Any:
    """SD 1.5's VAE as published, random weights from torch's current seed."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
    )


def write_full_size(root: Path) -> tuple[Path, Path]:
    """SD 1.5's UNet/VAE/scheduler and CLIP ViT-L/14's text tower, shapes as published, random weights."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = sd15_unet()
    vae = sd15_vae()
    sd = root / "sd15-random"
    save_pipeline(sd, unet, vae)
    del unet, vae
    clip = root / "clip-l-random"
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    text.save_pretrained(str(clip / "text_encoder"))
    write_clip_tokenizer(clip / "tokenizer")
    return sd, clip


def write_models(root: Path, *, tiny: bool = False) -> dict[str, dict[str, Any]]:
    """Full-size random-weight models of the four kinds under ``root`` (reused when already there), or with
    ``tiny`` the tiny profile's five (transcriber included); per-kind config overrides."""
    if tiny:
        return profiles.make_tiny(root / "tiny")
    root.mkdir(parents=True, exist_ok=True)
    done = root / ".written"
    demucs = root / "demucs"
    sd, clip = root / "sd15-random", root / "clip-l-random"
    if not done.exists():
        start = time.perf_counter()
        write_repo(demucs, "htdemucs_random", HTDEMUCS_KWARGS)
        OpenL3Backend.write_tiny(root, input_repr="mel256")  # the real OpenL3 architecture; "tiny" only in name here
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
