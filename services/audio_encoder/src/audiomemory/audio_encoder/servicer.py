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
from audiomemory.runtime.codec import (
    CHUNK_BYTES,
    AudioStreamReader,
    frames_limit,
    iter_tensor_chunks,
    to_tensor,
)
from audiomemory.runtime.errors import InvalidInput
from audiomemory.runtime.service import Gate
from audiomemory.v1 import audio_encoder_pb2, audio_encoder_pb2_grpc, common_pb2, tensor_pb2

SERVICE = "audio_encoder"
ACCEPTED_DTYPES = [tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_FLOAT16]


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
        )

    def _read(self, requests: Iterator[audio_encoder_pb2.EmbedRequest]) -> tuple[np.ndarray, int]:
        audio = AudioStreamReader("audio", max_seconds=self.config.max_seconds)
        for i, request in enumerate(requests):
            if not request.HasField("audio"):
                raise InvalidInput(f"requests[{i}].audio: missing, every request carries an audio chunk")
            audio.add(request.audio)
        return audio.result()

    def Embed(
        self, request_iterator: Iterator[audio_encoder_pb2.EmbedRequest], context: grpc.ServicerContext
    ) -> Iterator[audio_encoder_pb2.EmbedResponse]:
        self.gate.check_ready()
        audio, rate = self._read(request_iterator)
        with self.gate.slot(context):
            embeddings, timestamps = self.backend.embed(audio, rate, cancelled=lambda: not context.is_active())
        yield audio_encoder_pb2.EmbedResponse(
            header=audio_encoder_pb2.EmbedHeader(
                frames=embeddings.shape[0],
                embedding_dim=embeddings.shape[1],
                timestamps=to_tensor(timestamps, dtype="float64"),
            )
        )
        for chunk in iter_tensor_chunks(embeddings, chunk_bytes=CHUNK_BYTES, dtype="float32"):
            yield audio_encoder_pb2.EmbedResponse(embeddings=chunk)


def add_servicer(
    server: grpc.Server, backend: AudioEncoderBackend, gate: Gate, config: AudioEncoderConfig
) -> None:
    audio_encoder_pb2_grpc.add_AudioEncoderServicer_to_server(AudioEncoderServicer(backend, gate, config), server)
