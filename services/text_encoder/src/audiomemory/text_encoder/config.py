"""Typed configuration of the text encoder service (flags and ``AUDIOMEMORY_TEXT_ENCODER_*`` env)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from audiomemory.defaults import STABLE_DIFFUSION_MODEL
from audiomemory.runtime.config import ServiceConfig

#: Stable Diffusion 1.5 on the Hugging Face hub; its ``text_encoder``/``tokenizer`` subfolders hold
#: CLIP ViT-L/14's text tower, the encoder SD 1.5 was trained against.
DEFAULT_MODEL = STABLE_DIFFUSION_MODEL


class TextEncoderConfig(ServiceConfig):
    """Settings of the text encoder: which model, where, and how much one call may ask."""

    model_config = SettingsConfigDict(env_prefix="AUDIOMEMORY_TEXT_ENCODER_", extra="forbid", validate_default=True)


    backend: str = Field("clip", description="Registered backend name (entry point).")
    model: str = Field(
        DEFAULT_MODEL,
        description="Hub id (SD layout: text_encoder/ + tokenizer/ subfolders) or a local folder "
        "(SD layout, or a flat folder with config.json and the tokenizer files).",
    )
    revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit) of a hub id; None = the commit `models pull` "
        "locked (audiomemory-revisions.lock.json in the hub cache), else main."
    )
    max_chars: int = Field(20_000, ge=1, description="Longest text accepted, in characters.")
    max_texts: int = Field(16, ge=1, description="Most texts in one Encode call.")
