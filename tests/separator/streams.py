"""Stream helpers for the separator tests: test signals, request streams, reading stems back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from audiomemory.runtime.audio import AudioAssembler, iter_audio_chunks
from audiomemory.v1 import common_pb2, separator_pb2, tensor_pb2


def tone(rate: int, channels: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A float32 [channels, frames] test signal: a few sines plus a little noise."""
    t = np.arange(round(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    rows = [
        0.3 * np.sin(2 * np.pi * (110 * (c + 1)) * t) + 0.2 * np.sin(2 * np.pi * 1760 * t)
        + 0.05 * rng.standard_normal(t.shape)
        for c in range(channels)
    ]
    return np.stack(rows).astype(np.float32)


def requests(
    audio: np.ndarray, rate: int, *, output: separator_pb2.SeparateOptions | None = None,
    dtype: str = "float32", chunk_bytes: int = 1 << 20,
) -> Iterator[separator_pb2.SeparateRequest]:
    if output is not None:
        yield separator_pb2.SeparateRequest(options=output)
    for chunk in iter_audio_chunks(audio, rate, dtype=dtype, chunk_bytes=chunk_bytes):
        yield separator_pb2.SeparateRequest(audio=chunk)


@dataclass
class Separated:
    header: separator_pb2.StemsHeader
    stems: dict[str, np.ndarray]       # name -> float32 [channels, frames]
    wire_dtypes: set[int]              # dtypes seen on the wire
    largest_message: int               # bytes of the largest response message
    rounds: list[int]                  # frames of each round (one chunk per stem over the same frames)
    queued: list[separator_pb2.SeparateResponse]  # QueueStatus answers before the header
    served: common_pb2.Served | None  # the call's first message (None: the caller read it already)


def collect(responses: Iterator[separator_pb2.SeparateResponse], opened: bool = False) -> Separated:
    """Read a Separate answer: the Served header (unless ``opened``: read already), any QueueStatus, the header,
    then rounds of one chunk per stem (header order, same frames), checking that order as it goes."""
    queued = []
    served = None
    if not opened:
        opening = next(responses)
        assert opening.WhichOneof("item") == "served"
        served = opening.served
    first = next(responses)
    while first.WhichOneof("item") == "queued":
        queued.append(first)
        first = next(responses)
    assert first.WhichOneof("item") == "header"
    header = first.header
    largest = first.ByteSize()
    assemblers = [AudioAssembler(f"stem{i}", max_frames=1 << 40, max_bytes=1 << 40) for i in range(len(header.stems))]
    dtypes: set[int] = set()
    rounds: list[int] = []
    for i, response in enumerate(responses):
        assert response.WhichOneof("item") == "chunk", "only chunks after the header"
        largest = max(largest, response.ByteSize())
        chunk = response.chunk
        frames = chunk.audio.samples.shape[1]
        assert chunk.stem == i % len(header.stems), "each round has one chunk per stem, in header order"
        if chunk.stem == 0:
            rounds.append(frames)
        assert frames == rounds[-1], "a round's chunks cover the same frames"
        dtypes.add(chunk.audio.samples.dtype)
        assert chunk.audio.sample_rate == header.sample_rate
        assert chunk.audio.channels == header.channels
        assemblers[chunk.stem].add(chunk.audio)
    stems = {name: assembler.result()[0] for name, assembler in zip(header.stems, assemblers, strict=True)}
    return Separated(header, stems, dtypes, largest, rounds, queued, served)


def output(
    rate: int = 0, channels: int = 0, dtype: tensor_pb2.DType.ValueType = tensor_pb2.DTYPE_UNSPECIFIED,
    stems: list[str] | None = None,
) -> separator_pb2.SeparateOptions:
    return separator_pb2.SeparateOptions(
        output=tensor_pb2.AudioFormat(sample_rate=rate, channels=channels, dtype=dtype), stems=stems or []
    )
