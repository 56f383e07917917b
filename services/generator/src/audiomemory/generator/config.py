"""Typed configuration of the generator service (flags and ``AUDIOMEMORY_GENERATOR_*`` env)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from audiomemory.runtime.config import ServiceConfig

#: Stable Diffusion 1.5 on the Hugging Face hub (diffusers layout).
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"


class GeneratorConfig(ServiceConfig):
    """Settings of the generator: which pipeline, and the defaults a request may leave out."""

    model_config = SettingsConfigDict(env_prefix="AUDIOMEMORY_GENERATOR_", extra="forbid", validate_default=True)


    backend: str = Field("stable-diffusion", description="Registered backend name (entry point).")
    model: str = Field(DEFAULT_MODEL, description="Hub id or a local diffusers pipeline folder (model_index.json).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit); None = main.")
    default_steps: int = Field(30, ge=1, le=150, description="Denoising steps when a request says 0.")
    default_guidance: float = Field(7.5, ge=0.0, le=30.0, description="Guidance when a request leaves it unset.")
    default_size: int = Field(512, ge=64, le=1024, multiple_of=8, description="Width/height when a request says 0.")
    default_scheduler: str = Field("", description='Scheduler when a request says ""; "" = the pipeline\'s own.')
    safety_checker: bool = Field(
        False,
        description="Load SD's NSFW safety checker. Off: the service paints impressions of songs and "
        "the checker blacks out false positives; this is a deliberate configuration choice.",
    )
