"""Stream helpers for the audio encoder tests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from audiomemory.runtime.audio import iter_audio_chunks
from audiomemory.runtime.codec import TensorAssembler, from_tensor
from audiomemory.v1 import audio_encoder_pb2


def tone(rate: int, channels: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A float32 [channels, frames] test signal: a chord plus a little noise."""
    t = np.arange(round(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    rows = [
        0.3 * np.sin(2 * np.pi * 220 * (c + 1) * t) + 0.2 * np.sin(2 * np.pi * 3520 * t)
        + 0.05 * rng.standard_normal(t.shape)
        for c in range(channels)
    ]
    return np.stack(rows).astype(np.float32)


def requests(
    audio: np.ndarray, rate: int, dtype: str = "float32", chunk_bytes: int = 1 << 20
) -> Iterator[audio_encoder_pb2.EmbedRequest]:
    for chunk in iter_audio_chunks(audio, rate, dtype=dtype, chunk_bytes=chunk_bytes):
        yield audio_encoder_pb2.EmbedRequest(audio=chunk)


def collect(
    responses: Iterator[audio_encoder_pb2.EmbedResponse],
) -> tuple[audio_encoder_pb2.EmbedHeader, np.ndarray, np.ndarray]:
    """(header, timestamps [T] float64, embeddings [T, D] float32) of an Embed answer."""
    first = next(responses)
    assert first.WhichOneof("item") == "header"
    header = first.header
    timestamps = from_tensor(header.timestamps, field="timestamps", shape=(header.frames,), dtypes=("float64",))
    assembler = TensorAssembler(
        "embeddings", max_bytes=1 << 30, shape=(header.frames, header.embedding_dim), dtypes=("float32",), finite=True
    )
    for response in responses:
        assert response.WhichOneof("item") == "embeddings"
        assert response.ByteSize() <= 1 << 20
        assembler.add(response.embeddings)
    return header, timestamps, assembler.result()
