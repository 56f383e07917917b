"""The gRPC ``AudioEncoder`` service: validate, call the backend under the gate, stream embeddings.

``Embed`` reads ``AudioChunk``s (any rate 1..384 kHz, 1 or 2 channels, float32/float16, capped by
``max_seconds`` and ``max_input_bytes``) and answers one ``EmbedHeader`` (T, D, the [T] float64
timestamps: each window's centre) then the ``[T, D]`` float32 embeddings as ``TensorChunk``s of
at most ~1 MiB.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np

from audiomemory.audio_encoder.backends import AudioEncoderBackend
from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.runtime.audio import AudioStreamReader, frames_limit
from audiomemory.runtime.codec import CHUNK_BYTES, to_tensor
from audiomemory.runtime.errors import InvalidInput
from audiomemory.runtime.service import Gate
from audiomemory.v1 import audio_encoder_pb2, audio_encoder_pb2_grpc, common_pb2, tensor_pb2

SERVICE = "audio_encoder"
ACCEPTED_DTYPES = [tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_FLOAT16]
MAX_SIGNALS = 8


class AudioEncoderServicer(audio_encoder_pb2_grpc.AudioEncoderServicer):
    """Thin edge: protobuf ⇄ numpy; the backend does the work."""

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
            max_signals=MAX_SIGNALS,
        )

    def _read(self, requests: Iterator[audio_encoder_pb2.EmbedRequest]) -> tuple[list[np.ndarray], int, bool]:
        """Every signal's audio (all of it, for now), its rate, and whether timestamps were asked for."""
        options = audio_encoder_pb2.EmbedOptions()
        readers: list[AudioStreamReader] = []
        for i, request in enumerate(requests):
            if request.HasField("options"):
                if i:
                    raise InvalidInput(f"requests[{i}].options: options come once, in the first request")
                options = request.options
            if not readers:
                signals = options.signals or 1
                if not 1 <= signals <= MAX_SIGNALS:
                    raise InvalidInput(f"options.signals: expected 1..{MAX_SIGNALS}, got {options.signals}")
                readers = [AudioStreamReader(f"signals[{k}]", max_seconds=self.config.max_seconds)
                           for k in range(signals)]
            if not request.HasField("audio"):
                if i:
                    raise InvalidInput(f"requests[{i}].audio: missing, every request after the first carries audio")
                continue
            if not 0 <= request.signal < len(readers):
                raise InvalidInput(f"requests[{i}].signal: expected 0..{len(readers) - 1}, got {request.signal}")
            readers[request.signal].add(request.audio)
        if not readers:
            raise InvalidInput("audio: empty, the stream held no audio chunks")
        audio = [reader.result() for reader in readers]
        rates = {rate for _, rate in audio}
        if len(rates) > 1:
            raise InvalidInput(f"signals: every signal must have one sample rate, got {sorted(rates)}")
        return [samples for samples, _ in audio], rates.pop(), options.timestamps

    def Embed(
        self, request_iterator: Iterator[audio_encoder_pb2.EmbedRequest], context: grpc.ServicerContext
    ) -> Iterator[audio_encoder_pb2.EmbedResponse]:
        self.gate.check_ready()
        with self.gate.admit(context) as turn:
            for position in turn.waiting():
                yield audio_encoder_pb2.EmbedResponse(
                    queued=common_pb2.QueueStatus(position=position, running=self.gate.running_count)
                )
            signals, rate, timestamps = self._read(request_iterator)
            results = [
                self.backend.embed(audio, rate, cancelled=lambda: not context.is_active()) for audio in signals
            ]
        total = sum(len(frames) for frames, _ in results)
        done = 0
        for signal, (frames, stamps) in enumerate(results):
            rows = max(1, CHUNK_BYTES // max(1, frames.shape[1] * 4))
            for first in range(0, len(frames), rows):
                part = frames[first : first + rows]
                done += len(part)
                yield audio_encoder_pb2.EmbedResponse(frames=audio_encoder_pb2.EmbedFrames(
                    signal=signal, first=first, embeddings=to_tensor(part, dtype="float32"),
                    timestamps=to_tensor(stamps[first : first + rows], dtype="float64") if timestamps else None,
                    done=done, total=total,
                ))
        yield audio_encoder_pb2.EmbedResponse(end=audio_encoder_pb2.EmbedEnd(
            frames=[len(frames) for frames, _ in results], embedding_dim=self.backend.embedding_dim,
        ))


def add_servicer(
    server: grpc.Server, backend: AudioEncoderBackend, gate: Gate, config: AudioEncoderConfig
) -> None:
    audio_encoder_pb2_grpc.add_AudioEncoderServicer_to_server(AudioEncoderServicer(backend, gate, config), server)
