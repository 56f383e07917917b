"""Configuration of the separator service (flags and ``AUDIOMEMORY_SEPARATOR_*`` env vars)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from audiomemory.runtime.config import ServiceConfig, max_seconds_field


class SeparatorConfig(ServiceConfig):
    """Which separation model to load, how to run it, and how much audio one request may carry."""

    model_config = SettingsConfigDict(env_prefix="AUDIOMEMORY_SEPARATOR_", extra="forbid", validate_default=True)

    backend: str = Field("demucs", description="Registered separator backend (entry point).")
    model: str = Field("htdemucs", description="Model (bag) name, e.g. htdemucs, htdemucs_ft, or a tiny repo's name.")
    repo: Path | None = Field(None, description="Local Demucs model repo (folder of .th/.yaml); None = pretrained.")
    segment: float | None = Field(None, gt=0, description="Seconds per model call; None = the model's own.")
    overlap: float = Field(0.25, ge=0, lt=1, description="Overlap between consecutive segments.")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Model arithmetic: bfloat16 = torch.autocast; auto = bfloat16 on a CPU with native bf16 "
        "(avx512_bf16 or AMX: htdemucs ~7 % faster and ~350 MB smaller peak, stems >= 45 dB SNR vs float32), "
        "float32 elsewhere.",
    )
    compiled_cache: str = Field(
        "", description="openvino backend: where each HTDemucs' converted network (OpenVINO IR) and compiled blob "
        "are kept; \"\" = audiomemory-openvino in the Hugging Face cache (the models volume). Keyed by the bag's "
        "revision, the runtime versions and the segment's shape; read only where it cannot be written.",
    )
    shifts: int = Field(0, ge=0, le=20, description="Random time shifts averaged (0 = off, deterministic).")
    # The one length limit: the upload's byte cap follows from it (stereo float32 frames at its rate).
    max_seconds: float = max_seconds_field("input")
