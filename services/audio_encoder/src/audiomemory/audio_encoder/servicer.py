"""The gRPC ``AudioEncoder`` service: validate, frame as audio arrives, stream embeddings with progress.

``Embed`` takes a model slot first (answering ``queued`` with its place in line while it waits),
then reads ``EmbedOptions`` (first request only) and the ``AudioChunk``s of ``signals``
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
from audiomemory.runtime.audio import MAX_SAMPLE_RATE, check_chunk_format, frames_limit
from audiomemory.runtime.codec import CHUNK_BYTES, from_tensor, to_tensor
from audiomemory.runtime.errors import InvalidInput, ResourceExhausted
from audiomemory.runtime.gate import Gate
from audiomemory.v1 import audio_encoder_pb2, audio_encoder_pb2_grpc, common_pb2, tensor_pb2

SERVICE = "audio_encoder"
ACCEPTED_DTYPES = [tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_FLOAT16]


@dataclass
class _Signal:
    """What one signal's chunks so far have fixed: format, and frames received (at its own rate)."""

    rate: int = 0
    channels: int = 0
    frames: int = 0


class _EmbedCall:
    """One Embed call after it holds the slot: request checks, the stream, and the answers."""

    def __init__(self, backend: AudioEncoderBackend, config: AudioEncoderConfig, context: grpc.ServicerContext):
        self.backend = backend
        self.config = config
        self.context = context
        self.stream: EmbedStream | None = None
        self.signals: list[_Signal] = []
        self.input_frames = 0
        self.timestamps = False
        self.sent = 0  # frames answered so far, all signals

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
        self.input_frames = options.input_frames
        self.timestamps = options.timestamps
        self._start(count)

    def _start(self, count: int) -> None:
        self.signals = [_Signal() for _ in range(count)]
        # The check holds the context, not this call: a call → stream → check → call cycle would keep each
        # call's buffers (MBs) until Python's rare full collection (the soak grew 0.6 MB a job).
        context = self.context
        # The hop grows with the signal's length when the caller says it (input_frames); else the base hop.
        hop = self.backend.hop_for(self.input_frames / self.backend.sample_rate)
        self.stream = EmbedStream(self.backend, count, cancelled=lambda: not context.is_active(), hop=hop)

    def add(self, i: int, request: audio_encoder_pb2.EmbedRequest) -> Iterator[audio_encoder_pb2.EmbedResponse]:
        """Check request ``i`` and feed its audio; answer the frames that became ready."""
        if request.HasField("options"):
            if i > 0:
                raise InvalidInput(
                    f"requests[{i}].options: expected in the first request only, got it in request {i}"
                )
            self._options(request.options)
        elif i == 0:
            self._start(1)
        if not request.HasField("audio"):
            if i == 0 and request.HasField("options"):
                return
            raise InvalidInput(f"requests[{i}].audio: missing, every request after the options carries audio")
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
            chunk.samples, field=f"{field}.samples", shape=(chunk.channels, None), dtypes=("float32", "float16"),
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
        if self.stream is None:
            self._start(1)
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


class AudioEncoderServicer(audio_encoder_pb2_grpc.AudioEncoderServicer):
    """Thin edge: protobuf ⇄ numpy; ``stream`` frames, the backend embeds."""

    def __init__(self, backend: AudioEncoderBackend, gate: Gate, config: AudioEncoderConfig) -> None:
        self.backend = backend
        self.gate = gate
        self.config = config

    def Describe(
        self, request: common_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> audio_encoder_pb2.AudioEncoderInfo:
        self.gate.check_ready()
        return audio_encoder_pb2.AudioEncoderInfo(
            model=self.backend.describe().to_proto(SERVICE, package="audiomemory-audio-encoder"),
            sample_rate=self.backend.sample_rate,
            channels=self.backend.channels,
            accepted_dtypes=ACCEPTED_DTYPES,
            embedding_dim=self.backend.embedding_dim,
            hop_seconds=self.backend.hop_seconds,
            window_seconds=self.backend.window_seconds,
            max_input_frames=frames_limit(self.config.max_seconds, self.backend.sample_rate),
            max_signals=self.config.max_signals,
            max_input_sample_rate=MAX_SAMPLE_RATE,
        )

    def Embed(
        self, request_iterator: Iterator[audio_encoder_pb2.EmbedRequest], context: grpc.ServicerContext
    ) -> Iterator[audio_encoder_pb2.EmbedResponse]:
        self.gate.check_ready()
        # The slot first: audio is read (and held) only by a call that is running.
        with self.gate.admit(context) as turn:
            for position in turn.waiting():
                yield audio_encoder_pb2.EmbedResponse(
                    queued=common_pb2.QueueStatus(position=position, running=self.gate.running_count)
                )
            call = _EmbedCall(self.backend, self.config, context)
            count = 0
            for i, request in enumerate(request_iterator):
                count = i + 1
                yield from call.add(i, request)
            yield from call.finish(count)


def add_servicer(
    server: grpc.Server, backend: AudioEncoderBackend, gate: Gate, config: AudioEncoderConfig
) -> None:
    audio_encoder_pb2_grpc.add_AudioEncoderServicer_to_server(AudioEncoderServicer(backend, gate, config), server)
