"""Which model services fit together, and what a failed downstream call means for the caller.

- ``Infos`` — one ``Describe`` answer per model service.
- ``check_compatibility(infos, projection, stats, max_seconds)`` — ``FailedPrecondition`` with a sentence
  naming both services and their numbers (stems, dims, token lengths, the length limit, the projection
  and reference statistics files) — checked at start-up and again before each job's upload.
- ``batch_limit(generator, max_message_bytes)`` — the most prompts one ``Generate`` call carries: the generator's
  ``max_batch`` (1 from a generator older than batching), lowered to what fits the sender's message limit.
- ``rpc_error(kind, target, exc)`` — a downstream ``grpc.RpcError`` as the project error that names the
  service: down → UNAVAILABLE naming it and its target, its refusal of bad input → INVALID_ARGUMENT, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from audiomemory.orchestrator.decode import MAX_DECODED_RATE
from audiomemory.orchestrator.fusion import STEM_ORDER, Projection, ReferenceStats
from audiomemory.runtime.codec import batch_fits
from audiomemory.runtime.errors import (
    AudioMemoryError,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidInput,
    ResourceExhausted,
    Unavailable,
)
from audiomemory.runtime.kinds import NAMES
from audiomemory.v1 import (
    audio_encoder_pb2,
    generator_pb2,
    separator_pb2,
    tensor_pb2,
    text_encoder_pb2,
    transcriber_pb2,
)


@dataclass(frozen=True)
class Infos:
    """One ``Describe`` answer per service (``transcriber`` None when none is configured)."""

    separator: separator_pb2.SeparatorInfo
    audio_encoder: audio_encoder_pb2.AudioEncoderInfo
    text_encoder: text_encoder_pb2.TextEncoderInfo
    generator: generator_pb2.GeneratorInfo
    transcriber: transcriber_pb2.TranscriberInfo | None = None


def _who(kind: str, info: Any) -> str:
    model = info.model
    ident = f"{model.backend}/{model.model_id}" if model.backend else model.model_id or "unknown model"
    return f"the {NAMES[kind]} ({ident})"


def check_compatibility(
    infos: Infos, projection: Projection | None = None, stats: ReferenceStats | None = None,
    max_seconds: float | None = None,
) -> None:
    """Raise ``FailedPrecondition`` with a sentence naming both services and their numbers.

    ``max_seconds`` is the orchestrator's length limit (its ``max_seconds``): the one limit of the
    system, which every service must accept for what the orchestrator sends it.
    """
    sep, enc, text, gen = infos.separator, infos.audio_encoder, infos.text_encoder, infos.generator
    if max_seconds is not None:
        check_lengths(infos, max_seconds)
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
    if infos.transcriber is not None:
        check_transcriber(enc, infos.transcriber)


def check_transcriber(enc: audio_encoder_pb2.AudioEncoderInfo, words: transcriber_pb2.TranscriberInfo) -> None:
    """The transcriber takes the vocal stem as the separator delivers it: in the audio encoder's format."""
    if words.sample_rate <= 0:
        raise FailedPrecondition(f"{_who('transcriber', words)} reports sample_rate {words.sample_rate}")
    if enc.sample_rate > words.max_input_sample_rate or enc.channels > words.max_input_channels:
        raise FailedPrecondition(
            f"the vocal stem goes to {_who('transcriber', words)} in the format of {_who('audio_encoder', enc)}, "
            f"{enc.channels} channel(s) at {enc.sample_rate} Hz, but the transcriber takes at most "
            f"{words.max_input_channels} channel(s) at up to {words.max_input_sample_rate} Hz"
        )
    if tensor_pb2.DTYPE_FLOAT32 not in words.accepted_dtypes:
        raise FailedPrecondition(f"{_who('transcriber', words)} does not accept float32 audio")


def batch_limit(gen: generator_pb2.GeneratorInfo, max_message_bytes: int) -> int:
    """The most prompts one ``Generate`` request may carry: the generator's ``max_batch`` (0, from a generator
    older than batching: 1), lowered so that the request — that many prompts and negative prompts,
    ``max_length`` tokens each in float32 — fits ``max_message_bytes``, the sender's own message limit."""
    return max(1, min(gen.max_batch or 1, batch_fits(max_message_bytes, gen.max_length, gen.cross_attention_dim)))


def rpc_error(
    kind: str, target: str, exc: grpc.RpcError, context: grpc.ServicerContext | None = None
) -> AudioMemoryError:
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


def check_lengths(infos: Infos, max_seconds: float) -> None:
    """Every service takes a song of ``max_seconds`` (the orchestrator's limit) and the four stems."""
    sized: list[tuple[str, Any]] = [("separator", infos.separator), ("audio_encoder", infos.audio_encoder)]
    if infos.transcriber is not None:
        sized.append(("transcriber", infos.transcriber))
    for kind, info in sized:
        if info.max_input_frames and info.sample_rate:
            seconds = info.max_input_frames / info.sample_rate
            if seconds < max_seconds:
                raise FailedPrecondition(
                    f"the orchestrator accepts songs of up to {max_seconds:.0f} s (its max_seconds), but "
                    f"{_who(kind, info)} takes at most {seconds:.0f} s ({info.max_input_frames} frames at "
                    f"{info.sample_rate} Hz); raise its max_seconds or lower the orchestrator's"
                )
    rate = infos.separator.max_input_sample_rate
    if 0 < rate < MAX_DECODED_RATE:  # the separator takes the song as decoded: up to 48 kHz
        raise FailedPrecondition(
            f"the orchestrator sends songs at up to {MAX_DECODED_RATE} Hz, but {_who('separator', infos.separator)} "
            f"takes at most {rate} Hz"
        )
    signals = infos.audio_encoder.max_signals
    if 0 < signals < len(STEM_ORDER):
        raise FailedPrecondition(
            f"{_who('audio_encoder', infos.audio_encoder)} embeds at most {signals} signal(s) per call; the "
            f"orchestrator sends the {len(STEM_ORDER)} stems in one call"
        )
