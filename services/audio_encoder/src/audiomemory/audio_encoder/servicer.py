"""The gRPC ``AudioEncoder`` service: validate, frame as audio arrives, stream embeddings with progress.

``Embed`` reads its first message (the optional ``EmbedOptions``, whose pin it checks), opens as every model
call does (``runtime.servicer``: the ``Served`` header with the hop this call uses, then ``queued`` with its
place in line while it waits for a model slot: audio is read and held only by a call that is running); then
reads the ``AudioChunk``s of ``signals``
independent signals, interleaved in any order (any rate 1..384 kHz, 1 or 2 channels,
float32/float16, each signal at most ``max_seconds``). Windows are embedded as soon as they are
whole, the ready windows of all signals batched into one model call (``stream.EmbedStream``), and
answered as ``frames`` (``EmbedFrames``: ≤ ``CHUNK_BYTES`` of payload each, with ``done``/``total``
progress over the whole call), then one ``end`` (``EmbedEnd``: T per signal, D).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np

from audiomemory.audio_encoder.backends import AudioEncoderBackend
from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.audio_encoder.stream import EmbedStream, Frames, frame_count
from audiomemory.runtime.audio import (
    ACCEPTED_AUDIO_DTYPES,
    MAX_SAMPLE_RATE,
    WIRE_AUDIO_DTYPES,
    check_chunk_format,
    frames_limit,
)
from audiomemory.runtime.codec import CHUNK_BYTES, from_tensor, to_tensor
from audiomemory.runtime.errors import InvalidInput, ResourceExhausted
from audiomemory.runtime.gate import Gate
from audiomemory.runtime.servicer import ModelServicer, OptionsFirst
from audiomemory.v1 import audio_encoder_pb2, audio_encoder_pb2_grpc, common_pb2

SERVICE = "audio_encoder"


@dataclass
class _Signal:
    """What one signal's chunks so far have fixed: format, and frames received (at its own rate)."""

    rate: int = 0
    channels: int = 0
    frames: int = 0


class _EmbedCall:
    """One Embed call from its options on: request checks, the stream (once it holds the slot), the answers."""

    def __init__(self, servicer: AudioEncoderServicer, options: audio_encoder_pb2.EmbedOptions,
                 context: grpc.ServicerContext) -> None:
        self.backend = servicer.backend
        self.config = servicer.config
        self.context = context
        self.stream: EmbedStream | None = None
        self.signals: list[_Signal] = []
        self.sent = 0  # frames answered so far, all signals
        self._options(options)
        # The hop grows with the signal's length when the caller says it (input_frames); else the base hop.
        self.hop = self.backend.hop_for(self.input_frames / self.backend.sample_rate)

    # -- requests ---------------------------------------------------------------------------------
    def _options(self, options: audio_encoder_pb2.EmbedOptions) -> None:
        field = "requests[0].options"
        count = options.signals or 1
        if count < 0:
            raise InvalidInput(f"{field}.signals: expected 0..{self.config.max_signals} (0 = 1), got {count}")
        if count > self.config.max_signals:
            raise ResourceExhausted(
                f"{field}.signals: {count} is over the limit of max_signals={self.config.max_signals}"
            )
        limit = frames_limit(self.config.max_seconds, self.backend.sample_rate)
        if options.input_frames < 0:
            raise InvalidInput(f"{field}.input_frames: expected 0 (unknown) or more, got {options.input_frames}")
        if options.input_frames > limit:
            raise ResourceExhausted(
                f"{field}.input_frames: {options.input_frames} is over the limit of {limit} frames "
                f"({self.config.max_seconds:g} s at {self.backend.sample_rate} Hz)"
            )
        self.count = count
        self.input_frames = options.input_frames
        self.timestamps = options.timestamps

    def resolved(self) -> dict[str, object]:
        rate = self.backend.sample_rate
        return {"hop_seconds": self.hop / rate, "window_seconds": self.backend.window / rate,
                "embedding_dim": self.backend.embedding_dim}

    def run(self, requests: OptionsFirst[audio_encoder_pb2.EmbedRequest]) -> Iterator[audio_encoder_pb2.EmbedResponse]:
        """Holding the slot: frame the signals' audio as it arrives, answer frames, then ``end``."""
        self.signals = [_Signal() for _ in range(self.count)]
        # The check holds the context, not this call: a call → stream → check → call cycle would keep each
        # call's buffers (MBs) until Python's rare full collection (the soak grew 0.6 MB a job).
        context = self.context
        self.stream = EmbedStream(self.backend, self.count, cancelled=lambda: not context.is_active(), hop=self.hop)
        for i, request in requests.audio():
            yield from self.add(i, request)
        yield from self.finish(requests.count)

    def add(self, i: int, request: audio_encoder_pb2.EmbedRequest) -> Iterator[audio_encoder_pb2.EmbedResponse]:
        """Check request ``i`` and feed its audio; answer the frames that became ready."""
        assert self.stream is not None
        count = len(self.signals)
        if not 0 <= request.signal < count:
            raise InvalidInput(f"requests[{i}].signal: expected 0..{count - 1}, got {request.signal}")
        audio, rate = self._audio(f"requests[{i}].audio", self.signals[request.signal], request)
        for frames in self.stream.add(request.signal, audio, rate):
            yield from self._answer(frames)

    def _audio(
        self, field: str, signal: _Signal, request: audio_encoder_pb2.EmbedRequest
    ) -> tuple[np.ndarray, int]:
        chunk = request.audio
        check_chunk_format(field, chunk)
        if signal.rate and (chunk.sample_rate, chunk.channels) != (signal.rate, signal.channels):
            raise InvalidInput(
                f"{field}: format of signal {request.signal} changed mid-signal from {signal.rate} Hz "
                f"x{signal.channels} to {chunk.sample_rate} Hz x{chunk.channels}"
            )
        samples = from_tensor(
            chunk.samples, field=f"{field}.samples", shape=(chunk.channels, None), dtypes=WIRE_AUDIO_DTYPES,
            finite=True,
        )
        limit = frames_limit(self.config.max_seconds, chunk.sample_rate)
        if signal.frames + samples.shape[1] > limit:
            raise ResourceExhausted(
                f"{field}: signal {request.signal} is longer than the limit of {limit} frames "
                f"({self.config.max_seconds:g} s at {chunk.sample_rate} Hz)"
            )
        signal.rate, signal.channels = chunk.sample_rate, chunk.channels
        signal.frames += samples.shape[1]
        return samples, chunk.sample_rate

    def finish(self, requests: int) -> Iterator[audio_encoder_pb2.EmbedResponse]:
        """All requests read: check every signal had audio, embed the rest, answer ``end``."""
        assert self.stream is not None
        count = len(self.signals)
        for index, signal in enumerate(self.signals):
            if signal.frames == 0:
                raise InvalidInput(
                    f"requests: signal {index} got no audio frames in {requests} request(s); "
                    f"expected audio for every signal 0..{count - 1}"
                )
        for frames in self.stream.finish():
            yield from self._answer(frames)
        yield audio_encoder_pb2.EmbedResponse(
            end=audio_encoder_pb2.EmbedEnd(
                frames=[f.frames for f in self.stream.framers], embedding_dim=self.backend.embedding_dim
            )
        )

    # -- answers ----------------------------------------------------------------------------------
    def total(self) -> int:
        """Frames the call will embed: exact for finished signals, from ``input_frames`` for the others."""
        if self.input_frames == 0 or self.stream is None:
            return 0
        hop, window = self.stream.hop, self.backend.window
        return sum(
            f.frames if f.finished else frame_count(self.input_frames, hop, window) for f in self.stream.framers
        )

    def _answer(self, frames: Frames) -> Iterator[audio_encoder_pb2.EmbedResponse]:
        """``frames`` as EmbedFrames messages of at most ``CHUNK_BYTES`` payload each."""
        dim = frames.embeddings.shape[1]
        rows = max(1, CHUNK_BYTES // (dim * 4 + (8 if self.timestamps else 0)))
        assert self.stream is not None
        stamps = frames.timestamps(self.stream.hop / self.backend.sample_rate) if self.timestamps else None
        total = self.total()
        for start in range(0, frames.embeddings.shape[0], rows):
            part = frames.embeddings[start : start + rows]
            self.sent += part.shape[0]
            yield audio_encoder_pb2.EmbedResponse(
                frames=audio_encoder_pb2.EmbedFrames(
                    signal=frames.signal,
                    first=frames.first + start,
                    embeddings=to_tensor(part, dtype="float32"),
                    timestamps=None if stamps is None else to_tensor(stamps[start : start + rows], dtype="float64"),
                    done=self.sent,
                    total=total,
                )
            )


class AudioEncoderServicer(
    ModelServicer[AudioEncoderBackend, AudioEncoderConfig], audio_encoder_pb2_grpc.AudioEncoderServicer
):
    """Thin edge: protobuf ⇄ numpy; ``stream`` frames, the backend embeds."""

    kind = SERVICE
    package = "audiomemory-audio-encoder"

    def info(self, model: common_pb2.ModelInfo) -> audio_encoder_pb2.AudioEncoderInfo:
        b, rate = self.backend, self.backend.sample_rate
        return audio_encoder_pb2.AudioEncoderInfo(
            model=model, sample_rate=rate, channels=b.channels, accepted_dtypes=ACCEPTED_AUDIO_DTYPES,
            embedding_dim=b.embedding_dim, hop_seconds=b.hop_seconds, window_seconds=b.window_seconds,
            max_input_frames=frames_limit(self.config.max_seconds, rate), max_signals=self.config.max_signals,
            max_input_sample_rate=MAX_SAMPLE_RATE,
        )

    def Embed(
        self, request_iterator: Iterator[audio_encoder_pb2.EmbedRequest], context: grpc.ServicerContext
    ) -> Iterator[audio_encoder_pb2.EmbedResponse]:
        return self.serve_stream(context, request_iterator, audio_encoder_pb2.EmbedOptions(),
                                 lambda options: _EmbedCall(self, options, context), audio_encoder_pb2.EmbedResponse)


def add_servicer(
    server: grpc.Server, backend: AudioEncoderBackend, gate: Gate, config: AudioEncoderConfig
) -> None:
    audio_encoder_pb2_grpc.add_AudioEncoderServicer_to_server(AudioEncoderServicer(backend, gate, config), server)
