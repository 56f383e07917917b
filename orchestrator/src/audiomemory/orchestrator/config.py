"""Orchestrator settings: where the model services are (the transcriber optional), limits, cache and fusion defaults.

Environment prefix ``AUDIOMEMORY_ORCHESTRATOR_`` (e.g. ``AUDIOMEMORY_ORCHESTRATOR_GENERATOR_TARGET=
dns:///generator-headless:50051``). The field names are a contract with the Kubernetes manifests.
Targets are any gRPC target string: ``127.0.0.1:50052``, ``dns:///generator-headless:50051`` (with
the default ``round_robin`` policy every replica behind a headless Service gets requests), or
``ipv4:127.0.0.1:p1,127.0.0.1:p2``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from audiomemory.defaults import DEFAULT_STRENGTH
from audiomemory.orchestrator.decode import DEFAULT_MAX_SAMPLE_RATE, DEFAULT_MAX_SECONDS, MAX_DECODED_RATE
from audiomemory.orchestrator.sections import DEFAULT_MAX_SECTIONS, DEFAULT_MIN_SECTION_SECONDS, MAX_SECTIONS
from audiomemory.runtime.config import ServiceConfig

GiB = 1 << 30
MiB = 1 << 20

# round_robin spreads calls over every address a target resolves to; the retry policy moves a call
# that could not start (replica gone, overloaded) to another replica. gRPC retries only calls whose
# response has not started, so a Generate that already streamed steps is retried by the servicer.
DEFAULT_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [
                    {"service": "audiomemory.v1.Separator"},
                    {"service": "audiomemory.v1.AudioEncoder"},
                    {"service": "audiomemory.v1.TextEncoder"},
                    {"service": "audiomemory.v1.Generator"},
                    {"service": "audiomemory.v1.Transcriber"},
                ],
                "retryPolicy": {
                    "maxAttempts": 5,  # gRPC caps it at 5
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    # CANCELLED too: a Python server shutting down cancels calls it accepted but had not
                    # started (grpc/grpc#41785); every call here can be repeated, and gRPC never retries a
                    # call the client itself cancelled. FAILED_PRECONDITION: a replica that runs another identity
                    # than the call pins (runtime.identity), or whose model failed to load — another may serve it.
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED", "FAILED_PRECONDITION"],
                },
            }
        ],
    }
)


def _default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "audiomemory" / "orchestrator"


class OrchestratorConfig(ServiceConfig):
    """Typed settings of the orchestrator (flags > keywords > ``AUDIOMEMORY_ORCHESTRATOR_*`` env > defaults)."""

    model_config = SettingsConfigDict(env_prefix="AUDIOMEMORY_ORCHESTRATOR_", extra="forbid", validate_default=True)

    concurrency: int = Field(
        2, ge=1, description="Jobs running at once (each waits mostly on services; each holds its song)."
    )
    max_audio_bytes: int = Field(
        512 << 20, ge=1, description="Decoded audio (float32) of the running jobs, in bytes: a job waits for room "
        "for a song of max_seconds in its file's format before it reads the rest, and holds it until its audio "
        "vector is made (default: one 20-minute 48 kHz stereo song; the separator and encoder take one song at "
        "a time anyway, while another job's image is painted).",
    )

    separator_target: str = Field("127.0.0.1:50052", description="gRPC target of the separator.")
    audio_encoder_target: str = Field("127.0.0.1:50053", description="gRPC target of the audio encoder.")
    text_encoder_target: str = Field("127.0.0.1:50054", description="gRPC target of the text encoder.")
    generator_target: str = Field("127.0.0.1:50055", description="gRPC target of the generator.")
    transcriber_target: str = Field(
        "", description="gRPC target of the transcriber; empty = none (lyrics are then given, or none)."
    )
    service_config: str = Field(
        DEFAULT_SERVICE_CONFIG, description="JSON gRPC service config for the downstream channels."
    )

    downstream_tls_ca: Path | None = Field(
        None, description="CA (PEM) of the model services' certificates: their channels speak TLS when set."
    )
    downstream_tls_cert: Path | None = Field(None, description="Client certificate for the model services (mTLS).")
    downstream_tls_key: Path | None = Field(None, description="Key of downstream_tls_cert.")

    profile: str = Field(
        "", description="The model profile the services were started with (tiny, default, a YAML path), when "
        "one process started them all; recorded in each image's metadata so `reproduce` can use the same."
    )

    cache_dir: Path = Field(default_factory=_default_cache_dir, description="Audio cache folder.")
    cache_max_bytes: int = Field(2 * GiB, ge=0, description="Audio cache size cap; 0 turns the cache off.")
    max_upload_bytes: int = Field(256 * MiB, ge=1, description="Largest song file accepted.")
    max_seconds: float = Field(DEFAULT_MAX_SECONDS, gt=0, description="Longest song accepted (decoded), in seconds.")
    max_sample_rate: int = Field(
        DEFAULT_MAX_SAMPLE_RATE, ge=MAX_DECODED_RATE, description="Highest sample rate a song file may declare "
        "(refused from its header); songs are decoded at their own rate up to 48 kHz, higher rates resampled.",
    )
    send_timeout_seconds: float = Field(
        60.0, gt=0, description="A caller that takes none of its job's responses for this long is dropped.",
    )
    max_calls_per_caller: int | None = Field(
        4, ge=1, description="Calls one caller (its token's name, else its host) may have open at once — jobs, "
        "waiting or uploading, and Describe — refused before they hold a thread; None = no limit.",
    )
    caller_share: int | None = Field(
        1, ge=1, description="Jobs one caller (its token's name, else its host) may have running, and as many "
        "waiting; None = no share.",
    )
    max_lyrics_chars: int = Field(
        20_000, ge=1, le=30_000, description="Longest lyrics a job accepts, in characters (a long song's are a few "
        "thousand). At most 30 000: the image's record holds the lyrics twice and their window, a character may "
        "take 6 bytes of JSON (\\u0001), and the record must stay under the 1 MiB a reader takes back.",
    )

    min_section_seconds: int = Field(
        DEFAULT_MIN_SECTION_SECONDS, ge=1, le=600, description="A reel's shortest section, in seconds, when its "
        "request sets none (sections are found in the song's one-second bins; docs/DESIGN.md §11).",
    )
    max_sections: int = Field(
        DEFAULT_MAX_SECTIONS, ge=2, le=MAX_SECTIONS, description=f"A reel's most sections when its request sets no "
        f"maximum (a request may ask for up to {MAX_SECTIONS}, the limit: every section is an image painted).",
    )

    strength: float = Field(DEFAULT_STRENGTH, ge=0.0, le=1.0,
                            description="Default fusion alpha when a request sets none.")
    projection_seed: int = Field(0, ge=0, description="Default seed of the random projection (metadata).")
    reference_stats: Path | None = Field(None, description=".npz/.safetensors with per-dim mean, std.")
    projection_file: Path | None = Field(None, description=".npz/.safetensors with weight [D,4096], bias [D].")

    connect_timeout_seconds: float = Field(
        600.0, gt=0, description="How long start-up waits for every downstream service to answer Describe."
    )
    describe_timeout_seconds: float = Field(10.0, gt=0, description="Deadline of each downstream Describe.")
    stall_seconds: float = Field(
        300.0, gt=0, description="A downstream call that sends nothing (no progress, no place in line) for this "
        "long is given up as stalled (DEADLINE_EXCEEDED). Calls have no fixed deadline of their own: the "
        "job's deadline is the caller's.",
    )
    reel_max_batch: int = Field(
        0, ge=0, le=MAX_SECTIONS, description="Sections of a reel painted in one Generate call at most; "
        "0 = as many as the generator's Describe allows (max_batch).",
    )
    generate_attempts: int = Field(
        3, ge=1, le=10, description="Whole-Generate attempts when a replica dies mid-stream (deterministic)."
    )

    @field_validator("service_config")
    @classmethod
    def _valid_json(cls, value: str) -> str:
        try:
            json.loads(value)
        except ValueError as exc:
            raise ValueError(f"service_config must be JSON: {exc}") from None
        return value

    def targets(self) -> dict[str, str]:
        """Service kind → target, in pipeline order; the transcriber only when one is configured."""
        targets = {
            "separator": self.separator_target,
            "audio_encoder": self.audio_encoder_target,
            "text_encoder": self.text_encoder_target,
            "generator": self.generator_target,
        }
        if self.transcriber_target:
            targets["transcriber"] = self.transcriber_target
        return targets
