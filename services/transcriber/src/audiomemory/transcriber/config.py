"""Configuration of the transcriber service (flags and ``AUDIOMEMORY_TRANSCRIBER_*`` env vars)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from audiomemory.runtime.config import RelayedAudioConfig, max_seconds_field

#: Whisper large-v3-turbo: large-v3's 32-layer encoder (the best Whisper on sung vocals among the open
#: checkpoints) with a 4-layer decoder, so decoding costs about what whisper-small's does; 100 languages.
DEFAULT_MODEL = "openai/whisper-large-v3-turbo"


class TranscriberConfig(RelayedAudioConfig):
    """Which Whisper to load, the guards against text where nobody sings, and how long a signal may be."""

    model_config = SettingsConfigDict(env_prefix="AUDIOMEMORY_TRANSCRIBER_", extra="forbid", validate_default=True)

    backend: str = Field("whisper", description="Registered transcriber backend (entry point).")
    model: str = Field(
        DEFAULT_MODEL, description="Hub id (e.g. openai/whisper-small) or a local folder written by save_pretrained."
    )
    revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit) of a hub id; None = the commit the project pins "
        "for it (runtime.hub.PINNED), else the one `models pull` locked, else main."
    )
    language: str | None = Field(None, description="Language code to transcribe in; None = detect per window.")
    max_new_tokens: int | None = Field(
        None, ge=1, le=444, description="Most tokens decoded per 30 s window; None = the model's limit."
    )
    # The guards: a window is silence, or not speech, or a hallucinated loop — and then it yields nothing.
    silence_dbfs: float | None = Field(
        -60.0, le=0, description="Silence gate: a window whose RMS level is below this (dBFS) is not decoded at "
        "all (an instrumental's vocal stem is near-silent, and Whisper invents text for silence); None = off.",
    )
    no_speech_threshold: float | None = Field(
        0.6, ge=0, le=1, description="A window whose <|nospeech|> probability is above this AND whose average "
        "token log-probability is below logprob_threshold yields nothing (openai-whisper's rule); None = off.",
    )
    logprob_threshold: float = Field(-1.0, le=0, description="See no_speech_threshold.")
    compression_ratio_threshold: float | None = Field(
        2.4, gt=0, description="A window whose text gzip-compresses by more than this (a repetition loop) "
        "yields nothing; decoding is greedy, so there is no retry at a higher temperature; None = off.",
    )
    max_seconds: float = max_seconds_field()
