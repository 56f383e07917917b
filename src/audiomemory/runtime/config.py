"""Typed service configuration from flags and ``AUDIOMEMORY_*`` environment variables.

Each service subclasses ``ServiceConfig`` with its own env prefix (``AUDIOMEMORY_SEPARATOR_`` …)
and model fields. Precedence: flags > keyword arguments > environment > defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

MiB = 1 << 20
#: The one length limit (docs/DESIGN.md §4): the longest song, in seconds, every service takes by default
#: (the orchestrator's ``max_seconds`` too), 20 minutes of decoded audio.
MAX_SONG_SECONDS = 1200.0
#: The pace of a request stream that relays the separator's output as it is separated (the audio encoder's,
#: the transcriber's): a lower rate, over a longer window, than an upload's.
RELAYED_MIN_REQUEST_RATE = 8 * 1024
RELAYED_REQUEST_WINDOW_SECONDS = 120.0


class ServiceConfig(BaseSettings):
    """Settings every service shares: where it listens, how much it accepts, how it drains."""

    model_config = SettingsConfigDict(
        env_prefix="AUDIOMEMORY_", extra="forbid", validate_default=True, cli_kebab_case=True
    )


    host: str = Field("127.0.0.1", description="Interface to bind (0.0.0.0 in containers).")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus HTTP port; 0 = free one.")
    health_port: int | None = Field(
        None, ge=0, le=65535, description="A plaintext port serving only grpc.health.v1 (kubelet's gRPC probes "
        "do not speak TLS); None = health only on the main port; 0 = a free one.",
    )
    backend: str = Field("", description="Registered backend name (entry point).")
    device: str = Field("auto", description="auto (CUDA if present), cpu, cuda, cuda:N.")
    max_workers: int = Field(
        8, ge=1, description="gRPC handler threads beyond those the gate's calls hold: every running or queued "
        "call keeps a thread, so the server has concurrency + max_queue + max_workers (health and Describe "
        "are answered however busy it is).",
    )
    max_concurrent_rpcs: int = Field(32, ge=1, description="RPCs in flight before RESOURCE_EXHAUSTED.")
    concurrency: int = Field(1, ge=1, description="Model calls running at once.")
    max_calls_per_caller: int | None = Field(
        None, ge=1, description="Calls one caller (its token's name, else its host) may have open at once, "
        "refused before they hold a thread; None = no limit (a model service's one caller is the orchestrator).",
    )
    caller_share: int | None = Field(
        None, ge=1, description="Calls one caller (its token's name, else its host) may have running, and as "
        "many waiting; None = no share (a model service's one caller is the orchestrator).",
    )
    max_queue: int = Field(8, ge=0, description="Model calls waiting before RESOURCE_EXHAUSTED.")
    grace_seconds: float = Field(30.0, ge=0, description="SIGTERM: time in-flight calls get to finish.")
    max_message_bytes: int = Field(4 * MiB, ge=64 * 1024, description="Largest single gRPC message.")
    max_connection_age_seconds: float | None = Field(
        None, gt=0, description="Close client connections after this long (with grace_seconds to finish calls) "
        "so clients re-resolve DNS and find replicas added by a scale-up; None = never.",
    )
    min_request_rate: float = Field(
        64 * 1024, gt=0, description="A request stream (an upload, a service's audio) must arrive at this many "
        "bytes/s at least, averaged over request_window_seconds, counting only the time the server waits for it; "
        "slower, the call ends with DEADLINE_EXCEEDED and releases what it held.",
    )
    request_window_seconds: float = Field(
        30.0, gt=0, description="The averaging window of min_request_rate: also the longest silence a request "
        "stream may keep while the server waits for it.",
    )
    send_timeout_seconds: float = Field(
        300.0, gt=0, description="A call whose peer takes none of its responses for this long is cancelled (a "
        "model service's one peer, the orchestrator, may wait this long on another service before reading).",
    )
    max_connection_idle_seconds: float | None = Field(
        600.0, gt=0, description="Close a client connection with no call for this long; None = never.",
    )
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (None = torch default).")
    tls_cert: Path | None = Field(None, description="TLS certificate chain (PEM); with tls_key the port speaks TLS.")
    tls_key: Path | None = Field(None, description="TLS private key (PEM) of tls_cert.")
    tls_client_ca: Path | None = Field(
        None, description="CA (PEM) whose client certificates are required (mTLS); None = any client may connect."
    )
    auth_tokens: Path | None = Field(
        None, description="File of accepted bearer tokens (one per line, optional name after a space; each at "
        "least 32 characters; re-read when it changes, none accepted while it is missing or invalid); every call "
        "but health then needs 'authorization: Bearer TOKEN' (TLS only).",
    )

    @model_validator(mode="after")
    def _tls_pairs(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both, or neither")
        if self.tls_cert is None and (self.tls_client_ca is not None or self.auth_tokens is not None):
            raise ValueError("tls_client_ca and auth_tokens need TLS (tls_cert and tls_key): "
                             "neither a client certificate nor a token is ever checked in the clear")
        return self

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, **overrides: Any) -> Self:
        """Build from command-line flags (``--port 0 --model htdemucs``), then keywords and env."""
        if not argv:
            return cls(**overrides)
        return CliApp.run(cls, cli_args=list(argv), cli_exit_on_error=False, **overrides)

    def address(self, port: int | None = None) -> str:
        """``host:port`` to bind (``port``: another of this host's, e.g. the health port), an IPv6 host in
        brackets (``[::]:50051``)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port if port is None else port}"


def max_seconds_field(what: str = "signal") -> Any:
    """The ``max_seconds`` setting of a service that takes audio: ``MAX_SONG_SECONDS`` by default."""
    return Field(MAX_SONG_SECONDS, gt=0, description=f"Longest {what} accepted, in seconds (whole songs).")


class RelayedAudioConfig(ServiceConfig):
    """A service whose audio is the separator's output, relayed as it is separated (and paced by the other
    consumers): its request stream is held to a lower rate, over a longer window, than an upload's."""

    min_request_rate: float = Field(
        RELAYED_MIN_REQUEST_RATE, gt=0, description=ServiceConfig.model_fields["min_request_rate"].description
    )
    request_window_seconds: float = Field(
        RELAYED_REQUEST_WINDOW_SECONDS, gt=0,
        description=ServiceConfig.model_fields["request_window_seconds"].description,
    )
