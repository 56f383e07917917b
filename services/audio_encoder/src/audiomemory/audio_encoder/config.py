"""Configuration of the audio encoder service (flags and ``AUDIOMEMORY_AUDIO_ENCODER_*`` env vars)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from audiomemory.runtime.config import ServiceConfig


class AudioEncoderConfig(ServiceConfig):
    """Which OpenL3 variant to load, how to frame and compute, and how much audio one call may carry."""

    model_config = SettingsConfigDict(
        env_prefix="AUDIOMEMORY_AUDIO_ENCODER_", extra="forbid", validate_default=True
    )


    backend: str = Field("openl3", description="Registered audio encoder backend (entry point).")
    content_type: Literal["music", "env"] = Field("music", description="OpenL3 training content.")
    input_repr: Literal["mel256", "mel128", "linear"] = Field("mel256", description="OpenL3 input spectrogram.")
    embedding_size: Literal[512, 6144] = Field(512, description="Embedding dimension D.")
    # 0.2 s (not OpenL3's usual 0.1): half the windows. Through the whole pipeline on real music
    # (make bench-song --candidates: bf16 separator and OpenL3) 0.2 s keeps the fidelity rule against the
    # float32 hop-0.1 reference (error 9.1e-5, allowed 1.12e-4); 0.4 s did not (3.65e-4), though on OpenL3
    # alone and short excerpts it had (scripts/fidelity_openl3.py); 0.5 s and 1 s never did.
    hop_seconds: float = Field(0.2, ge=0.01, le=10, description="Seconds between consecutive frames.")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="CNN compute dtype; auto = bfloat16 autocast on a CPU with native bf16 (AVX512-BF16/AMX), "
        "else float32. Part of the model identity (describe), so cached vectors never mix precisions.",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Frames per model call (bounds memory).")
    weights_dir: Path | None = Field(
        None, description="TORCH_HOME-like root holding hub/checkpoints/torchopenl3_*.pth.tar; None = torch's."
    )
    max_seconds: float = Field(1200.0, gt=0, description="Longest signal accepted, in seconds.")
    max_signals: int = Field(8, ge=1, le=64, description="Most signals (e.g. stems) in one Embed call.")
