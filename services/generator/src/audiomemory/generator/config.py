"""Typed configuration of the generator service (flags and ``AUDIOMEMORY_GENERATOR_*`` env)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from audiomemory.defaults import STABLE_DIFFUSION_MODEL
from audiomemory.generator.backends import (
    MAX_GUIDANCE,
    MAX_SIZE,
    MAX_STEPS,
    MIN_GUIDANCE,
    MIN_SIZE,
    MIN_STEPS,
    SIZE_MULTIPLE,
    Size,
)
from audiomemory.runtime.config import ServiceConfig

#: Stable Diffusion 1.5 on the Hugging Face hub (diffusers layout).
DEFAULT_MODEL = STABLE_DIFFUSION_MODEL

#: The UNet's compute precision setting (``backends.stable_diffusion.compute_dtype`` resolves it).
Precision = Literal["auto", "float32", "bfloat16"]


class GeneratorConfig(ServiceConfig):
    """Settings of the generator: which pipeline, and the defaults a request may leave out."""

    model_config = SettingsConfigDict(env_prefix="AUDIOMEMORY_GENERATOR_", extra="forbid", validate_default=True)


    backend: str = Field("stable-diffusion", description="Registered backend name (entry point).")
    model: str = Field(DEFAULT_MODEL, description="Hub id or a local diffusers pipeline folder (model_index.json).")
    revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit) of a hub id; None = the commit `models pull` "
        "locked (audiomemory-revisions.lock.json in the hub cache), else main."
    )
    # Bounded by the limits ``check_request`` enforces, so a default is always a valid request value.
    default_steps: int = Field(
        20, ge=MIN_STEPS, le=MAX_STEPS, description="Denoising steps when a request says 0 (SD 1.5's PNDM: "
        "44 dB PSNR from its 30-step image, BENCHMARKS.md 'Fewer denoising steps')."
    )
    default_guidance: float = Field(
        7.5, ge=MIN_GUIDANCE, le=MAX_GUIDANCE, description="Guidance when a request leaves it unset."
    )
    default_size: int = Field(
        512, ge=MIN_SIZE, le=MAX_SIZE, multiple_of=SIZE_MULTIPLE, description="Width/height when a request says 0."
    )
    precision: Precision = Field(
        "auto",
        description="UNet compute dtype (the VAE decodes in float32 always). auto: float16 on CUDA; on CPU "
        "bfloat16 where the CPU has native bf16 instructions (avx512_bf16/amx_bf16), else float32. "
        "float16 exists for CUDA only and is what auto picks there; CPUs lack fast float16 kernels.",
    )
    max_batch: int = Field(
        8, ge=1, le=64, description="Most prompts one Generate call may paint together (GenerateRequest.seeds); "
        "Describe publishes it lowered so that that many prompts and negative prompts (max_length tokens, "
        "float32) fit max_message_bytes. The UNet's memory grows with it (2 x B rows with guidance)."
    )
    batch_unet: Literal["auto", "batched", "per_item"] = Field(
        "auto", description="How a batch runs the UNet. batched: one call per step for the whole batch, its small "
        "matrix products item by item, so that item i is bit for bit the image its prompt and seed paint alone "
        "(measured on a CPU in float32, BENCHMARKS.md 'Batched painting'); per_item: each item's rows in turn "
        "(exactly a one-prompt call; a batch then saves calls, not compute). auto: batched on a CPU computing in "
        "float32, per_item elsewhere (CUDA, bfloat16: not measured). A batch without guidance (<= 1) always runs "
        "per_item.",
    )
    compiled_cache: str = Field(
        "", description="openvino backend: where the UNet's converted graphs (OpenVINO IR, one per shape) and "
        "compiled blobs are kept; \"\" = audiomemory-openvino in the Hugging Face cache (the models volume, which "
        "`models pull` writes). Keyed by the weights' revision, the runtime versions and the shape; read only "
        "where it cannot be written.",
    )
    compiled_sizes: str = Field(
        "", description="openvino backend: the only image sizes it paints, comma-separated WIDTHxHEIGHT or N (N x N), "
        "e.g. \"512, 768x512\"; \"\" = default_size alone. Each is converted at start-up (kept in compiled_cache; "
        "`models pull` does it once) and compiled on first use; Generate refuses any other size (INVALID_ARGUMENT), "
        "so a caller never makes it convert a graph (~40 s of CPU and ~3.4 GB of IR a size for SD 1.5).",
    )
    default_scheduler: str = Field("", description='Scheduler when a request says ""; "" = the pipeline\'s own.')
    safety_checker: bool = Field(
        False,
        description="Load SD's NSFW safety checker. Off: the service paints impressions of songs and "
        "the checker blacks out false positives; this is a deliberate configuration choice.",
    )

    @field_validator("compiled_sizes")
    @classmethod
    def _sizes_parse(cls, text: str) -> str:
        parse_sizes(text)
        return text

    def sizes(self) -> tuple[Size, ...]:
        """``compiled_sizes`` as (width, height) pairs, ``default_size``'s square first, no repeats."""
        square = (self.default_size, self.default_size)
        return tuple(dict.fromkeys([square, *parse_sizes(self.compiled_sizes)]))


def parse_sizes(text: str) -> list[Size]:
    """``"512, 768x512"`` → ``[(512, 512), (768, 512)]``; a size outside the request bounds is refused by name."""
    sizes: list[Size] = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        found = re.fullmatch(r"(\d{1,4})(?:\s*[xX]\s*(\d{1,4}))?", entry)
        if found is None:
            raise ValueError(f"compiled_sizes: each entry is WIDTHxHEIGHT or N, got {entry[:20]!r}")
        width, height = int(found[1]), int(found[2] or found[1])
        for value in (width, height):
            if not (MIN_SIZE <= value <= MAX_SIZE and value % SIZE_MULTIPLE == 0):
                raise ValueError(f"compiled_sizes: {entry!r}: sides are multiples of {SIZE_MULTIPLE} in "
                                 f"{MIN_SIZE}..{MAX_SIZE}")
        sizes.append((width, height))
    return sizes
