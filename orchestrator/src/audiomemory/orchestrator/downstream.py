"""The orchestrator's view of the four model services: channels, ``Describe``, compatibility.

The orchestrator has no model of its own; what the shared runtime calls its *backend* is this
``Downstream``: ``load()`` opens a channel per service (round-robin + retry service config), waits
until each answers ``Describe`` and checks that they fit together (``check_compatibility``), so
the orchestrator reports SERVING only once the whole pipeline can run. Jobs re-read ``Describe``
(``describe_all``) because services are redeployed independently.

``rpc_error(kind, target, exc)`` turns a downstream ``grpc.RpcError`` into the project error that
names the service: a service that is down → ``Unavailable`` naming it and its target.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from audiomemory.orchestrator.config import OrchestratorConfig
from audiomemory.orchestrator.fusion import STEM_ORDER, Projection, ReferenceStats
from audiomemory.runtime.backend import Backend, ModelInfo, package_version
from audiomemory.runtime.errors import (
    AudioMemoryError,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidInput,
    ResourceExhausted,
    Unavailable,
)
from audiomemory.stack import MODEL_KINDS
from audiomemory.v1 import (
    audio_encoder_pb2,
    audio_encoder_pb2_grpc,
    common_pb2,
    generator_pb2,
    generator_pb2_grpc,
    separator_pb2,
    separator_pb2_grpc,
    text_encoder_pb2,
    text_encoder_pb2_grpc,
)

log = logging.getLogger(__name__)

KINDS = MODEL_KINDS  # the services called downstream, in pipeline order
NAMES = {
    "separator": "separator",
    "audio_encoder": "audio encoder",
    "text_encoder": "text encoder",
    "generator": "generator",
}


@dataclass(frozen=True)
class Infos:
    """One ``Describe`` answer per service."""

    separator: separator_pb2.SeparatorInfo
    audio_encoder: audio_encoder_pb2.AudioEncoderInfo
    text_encoder: text_encoder_pb2.TextEncoderInfo
    generator: generator_pb2.GeneratorInfo


def _who(kind: str, info: Any) -> str:
    model = info.model
    ident = f"{model.backend}/{model.model_id}" if model.backend else model.model_id or "unknown model"
    return f"the {NAMES[kind]} ({ident})"


def check_compatibility(
    infos: Infos, projection: Projection | None = None, stats: ReferenceStats | None = None
) -> None:
    """Raise ``FailedPrecondition`` with a sentence naming both services and their numbers."""
    sep, enc, text, gen = infos.separator, infos.audio_encoder, infos.text_encoder, infos.generator
    missing = [s for s in STEM_ORDER if s not in sep.stems]
    if missing:
        raise FailedPrecondition(
            f"{_who('separator', sep)} delivers the stems {list(sep.stems)}, but the orchestrator pools "
            f"{list(STEM_ORDER)} for {_who('audio_encoder', enc)}; missing {missing}"
        )
    if enc.embedding_dim <= 0:
        raise FailedPrecondition(f"{_who('audio_encoder', enc)} reports embedding_dim {enc.embedding_dim}")
    if enc.channels not in (0, 1, 2) or enc.sample_rate < 0:
        raise FailedPrecondition(
            f"{_who('audio_encoder', enc)} asks for {enc.channels} channel(s) at {enc.sample_rate} Hz, which "
            f"{_who('separator', sep)} cannot deliver (1 or 2 channels)"
        )
    pooled = 2 * len(STEM_ORDER) * enc.embedding_dim
    if text.hidden_size != gen.cross_attention_dim:
        raise FailedPrecondition(
            f"{_who('text_encoder', text)} produces {text.hidden_size}-d token embeddings but "
            f"{_who('generator', gen)} needs {gen.cross_attention_dim}-d prompt embeddings "
            f"(its cross-attention dim); use a matching pair of models"
        )
    if text.max_length and gen.max_length and text.max_length != gen.max_length:
        raise FailedPrecondition(
            f"{_who('text_encoder', text)} gives {text.max_length} tokens per text but "
            f"{_who('generator', gen)} was trained with {gen.max_length}"
        )
    if 0 < text.max_texts < 2:
        raise FailedPrecondition(
            f"{_who('text_encoder', text)} accepts {text.max_texts} text per call; the orchestrator encodes "
            f"the lyrics and the negative prompt in one call (2 texts) for {_who('generator', gen)}"
        )
    if projection is not None and (projection.in_dim != pooled or projection.out_dim != text.hidden_size):
        raise FailedPrecondition(
            f"the projection file maps {projection.in_dim} → {projection.out_dim} values, but "
            f"{_who('audio_encoder', enc)} gives a {pooled}-d pooled audio vector "
            f"({enc.embedding_dim}-d x 4 stems x mean,std) and {_who('text_encoder', text)} "
            f"{text.hidden_size}-d token embeddings"
        )
    if stats is not None and stats.mean.size != pooled:
        raise FailedPrecondition(
            f"the reference statistics have {stats.mean.size} dimensions, but {_who('audio_encoder', enc)} "
            f"gives a {pooled}-d pooled audio vector"
        )


def rpc_error(kind: str, target: str, exc: grpc.RpcError, context: grpc.ServicerContext | None = None) -> Exception:
    """The project error for a failed downstream call (the caller raises it ``from None``)."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or code.name
    name = NAMES[kind]
    if code is grpc.StatusCode.CANCELLED and (context is None or not context.is_active()):
        return Cancelled(f"the job was cancelled while the {name} was working")
    if code is grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"the {name} service at {target!r} is unavailable: {details}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"the {name} service at {target!r} did not finish before the deadline")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInput(f"the {name} refused the request: {details}")
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(f"the {name} cannot run: {details}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(f"the {name} is over a limit or busy: {details}")
    if code is grpc.StatusCode.CANCELLED:
        return Unavailable(f"the {name} service at {target!r} cancelled the call: {details}")
    return AudioMemoryError(f"the {name} service at {target!r} failed with {code.name}: {details}")


class Downstream(Backend):
    """Channels and stubs to the four services; ``load`` waits for them and checks compatibility."""

    name = "orchestrator"
    exclusive_load = False  # waits on the other services (maybe in this process) and builds no torch modules

    def __init__(self, config: OrchestratorConfig) -> None:
        super().__init__(config)
        self.config: OrchestratorConfig = config
        self.targets = config.targets()
        options = [
            ("grpc.service_config", config.service_config),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            # gRPC keeps only 256 KiB of a call for retries by default; a full-size SD 1.5 GenerateRequest
            # (two [1, 77, 768] float32 tensors, 473 KB) would then never be retried on another replica.
            ("grpc.per_rpc_retry_buffer_size", config.max_message_bytes),
        ]
        self.channels = {kind: grpc.insecure_channel(self.targets[kind], options=options) for kind in KINDS}
        self.separator = separator_pb2_grpc.SeparatorStub(self.channels["separator"])
        self.audio_encoder = audio_encoder_pb2_grpc.AudioEncoderStub(self.channels["audio_encoder"])
        self.text_encoder = text_encoder_pb2_grpc.TextEncoderStub(self.channels["text_encoder"])
        self.generator = generator_pb2_grpc.GeneratorStub(self.channels["generator"])
        self.projection = Projection.from_file(config.projection_file) if config.projection_file else None
        self.stats = ReferenceStats.from_file(config.reference_stats) if config.reference_stats else None
        self._closed = threading.Event()

    def _stub(self, kind: str) -> Any:
        return getattr(self, kind)

    def describe_all(
        self, timeout: float | None = None, *, wait_for_ready: bool = False, metadata: Any = None
    ) -> Infos:
        """Every service's ``Describe``, concurrently; the first failure names its service."""
        timeout = self.config.describe_timeout_seconds if timeout is None else timeout
        calls = {
            kind: self._stub(kind).Describe.future(
                common_pb2.DescribeRequest(),
                timeout=timeout,
                wait_for_ready=wait_for_ready,
                metadata=metadata,
            )
            for kind in KINDS
        }
        answers: dict[str, Any] = {}
        for kind in KINDS:
            try:
                answers[kind] = calls[kind].result()
            except grpc.RpcError as exc:
                raise rpc_error(kind, self.targets[kind], exc) from None
        return Infos(**answers)

    def load(self) -> None:
        """Wait until every service answers, then check they fit together (the readiness gate)."""
        deadline = time.monotonic() + self.config.connect_timeout_seconds
        while True:
            try:
                infos = self.describe_all(wait_for_ready=True)
                break
            except (Unavailable, DeadlineExceeded) as exc:
                if self._closed.is_set() or time.monotonic() > deadline:
                    raise Unavailable(
                        f"gave up after {self.config.connect_timeout_seconds:.0f} s waiting for the model "
                        f"services: {exc}"
                    ) from None
                log.info("orchestrator: waiting for the model services: %s", exc)
                time.sleep(1.0)
        check_compatibility(infos, self.projection, self.stats)
        if self.projection is None:
            # build (and cache) the default seeded projection now rather than in the first job
            pooled = 2 * len(STEM_ORDER) * infos.audio_encoder.embedding_dim
            Projection.from_seed(infos.text_encoder.hidden_size, self.config.projection_seed, pooled)
        log.info(
            "orchestrator: pipeline ready (%s)",
            ", ".join(f"{k}={getattr(infos, k).model.model_id}" for k in KINDS),
        )

    def describe(self) -> ModelInfo:
        extra = {
            "default_strength": str(self.config.strength),
            "default_projection_seed": str(self.config.projection_seed),
            "projection": self.projection.identity if self.projection else "seeded",
            "reference_stats": self.stats.identity if self.stats else "none",
            "stems": ",".join(STEM_ORDER),
        }
        return ModelInfo(
            backend="orchestrator",
            model_id="audiomemory-orchestrator",
            revision=package_version("audiomemory-orchestrator"),
            device="cpu",
            dtype="float32",
            extra=extra,
        )

    def close(self) -> None:
        self._closed.set()
        for channel in self.channels.values():
            channel.close()
