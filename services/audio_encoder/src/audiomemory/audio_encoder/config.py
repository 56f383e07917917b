"""Configuration of the audio encoder service (flags and ``AUDIOMEMORY_AUDIO_ENCODER_*`` env vars)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from audiomemory.runtime.config import RelayedAudioConfig, max_seconds_field


class AudioEncoderConfig(RelayedAudioConfig):
    """Which OpenL3 variant to load, how to frame and compute, and how much audio one call may carry."""

    model_config = SettingsConfigDict(
        env_prefix="AUDIOMEMORY_AUDIO_ENCODER_", extra="forbid", validate_default=True
    )


    backend: str = Field("openl3", description="Registered audio encoder backend (entry point).")
    content_type: Literal["music", "env"] = Field("music", description="OpenL3 training content.")
    input_repr: Literal["mel256", "mel128", "linear"] = Field("mel256", description="OpenL3 input spectrogram.")
    embedding_size: Literal[512, 6144] = Field(512, description="Embedding dimension D.")
    # The hop grows with the signal: a song's pooled vector is a mean over its frames, and its error
    # against the hop-0.1 s reference falls as hop² / length (measured through the pipeline on real music:
    # hop 0.2 → 9.1e-5 at 60 s, 2.2e-5 at 210 s; hop 0.4 → 3.65e-4 at 60 s). So a signal up to
    # hop_growth_seconds long is framed every hop_seconds, a longer one every
    # hop_seconds × sqrt(length / hop_growth_seconds) (at most max_hop_seconds): the same error at every
    # length as at hop_growth_seconds, for far fewer windows on a whole song (docs/DESIGN.md §9).
    hop_seconds: float = Field(
        0.1, ge=0.01, le=10, description="Seconds between consecutive frames (signals up to hop_growth_seconds)."
    )
    hop_growth_seconds: float = Field(
        30.0, ge=0, description="Longer signals get hop_seconds × sqrt(length / this); 0 = the hop is fixed."
    )
    max_hop_seconds: float = Field(0.5, ge=0.01, le=10, description="Largest hop the growth rule gives.")
    precision: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        "auto",
        description="CNN compute: auto = int8 on an x86 CPU with VNNI (AVX512-VNNI/AVX-VNNI/AMX), else bfloat16 "
        "autocast on a CPU with native bf16 (AVX512-BF16/AMX), else float32 (CUDA: float32). Part of the "
        "model identity (describe), so cached vectors never mix precisions.",
    )
    compiled_cache: str = Field(
        "", description="openvino backend: where OpenL3's converted CNN (OpenVINO IR) and compiled blob are kept; "
        "\"\" = audiomemory-openvino in the Hugging Face cache (the models volume). Keyed by the weights' revision, "
        "the runtime versions and the input's shape; read only where it cannot be written.",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Frames per model call (bounds memory).")
    weights_dir: Path | None = Field(
        None, description="TORCH_HOME-like root holding hub/checkpoints/torchopenl3_*.pth.tar; None = torch's."
    )
    max_seconds: float = max_seconds_field()
    max_signals: int = Field(8, ge=1, le=64, description="Most signals (e.g. stems) in one Embed call.")
