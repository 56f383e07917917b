"""Audio on the wire: ``[channels, frames]`` float arrays streamed as ``AudioChunk`` runs of frames.

- ``iter_audio_chunks`` splits audio into chunks of at most ``codec.CHUNK_BYTES`` of samples;
- ``AudioAssembler`` reassembles a stream into float32, validating every chunk (rate, channels, dtype,
  shape, finiteness) and capping frames and bytes before they pile up;
- ``AudioStreamReader`` is the services' reading of one such stream, its caps following from one
  length limit in seconds (``frames_limit``, ``max_audio_bytes``);
- ``check_audio`` is a backend's input check.

Failures raise ``InvalidInput`` (or ``ResourceExhausted`` for caps) naming the field, what was expected
and what came.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from audiomemory.runtime.codec import _BY_NAME, CHUNK_BYTES, _name_of, as_numpy, from_tensor, to_tensor
from audiomemory.runtime.errors import InvalidInput, ResourceExhausted, describe
from audiomemory.v1 import tensor_pb2

if TYPE_CHECKING:
    import torch

MAX_SAMPLE_RATE = 384_000
#: The channel counts audio on the wire may have (mono, stereo).
WIRE_CHANNELS = (1, 2)
#: The sample types audio on the wire may have, by name and as the wire's enum (a service's ``accepted_dtypes``).
WIRE_AUDIO_DTYPES = ("float32", "float16")
ACCEPTED_AUDIO_DTYPES = [tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_FLOAT16]


def iter_audio_chunks(
    samples: np.ndarray | torch.Tensor,
    sample_rate: int,
    dtype: str = "float32",
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[tensor_pb2.AudioChunk]:
    """Split ``[channels, frames]`` audio into ``AudioChunk`` runs of at most ``chunk_bytes`` of samples."""
    arr = as_numpy(samples, contiguous=False)
    if arr.ndim != 2:
        raise ValueError(f"audio must be [channels, frames], got shape {arr.shape}")
    if _name_of(arr.dtype) != dtype:
        arr = arr.astype(_BY_NAME[dtype].numpy)  # once, not per chunk
    channels, frames = arr.shape
    step = max(1, chunk_bytes // (channels * _BY_NAME[dtype].numpy.itemsize))
    for start in range(0, frames, step):
        yield tensor_pb2.AudioChunk(
            sample_rate=sample_rate, channels=channels, samples=to_tensor(arr[:, start : start + step], dtype)
        )


def check_chunk_format(where: str, chunk: tensor_pb2.AudioChunk) -> None:
    """A chunk's own rate and channel count are ones the wire allows (``where`` names it in the message)."""
    if not 1 <= chunk.sample_rate <= MAX_SAMPLE_RATE:
        raise InvalidInput(f"{where}.sample_rate: expected 1..{MAX_SAMPLE_RATE} Hz, got {chunk.sample_rate}")
    if chunk.channels not in WIRE_CHANNELS:
        raise InvalidInput(f"{where}.channels: expected 1 or 2, got {chunk.channels}")


class AudioAssembler:
    """Reassembles streamed audio into float32 ``[channels, frames]``, validating every chunk."""

    def __init__(self, field: str, *, max_frames: int, max_bytes: int, keep: bool = True) -> None:
        """``keep=False``: ``add`` checks and returns each part without keeping it (the caller stores it
        its own way; ``result`` is then not available)."""
        self.field = field
        self.keep = keep
        self.chunks = 0
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.sample_rate = 0
        self.channels = 0
        self.frames = 0
        self.nbytes = 0
        self._parts: list[np.ndarray] = []

    def add(self, chunk: tensor_pb2.AudioChunk) -> np.ndarray:
        """Check ``chunk`` against the stream so far and the caps; return its samples ``[channels, n]``."""
        where = f"{self.field}[{self.chunks}]"
        check_chunk_format(where, chunk)
        if self.chunks and (chunk.sample_rate, chunk.channels) != (self.sample_rate, self.channels):
            raise InvalidInput(
                f"{where}: format changed mid-stream from {self.sample_rate} Hz x{self.channels} "
                f"to {chunk.sample_rate} Hz x{chunk.channels}"
            )
        shape = chunk.samples.shape
        # The length first (the limit a person thinks in), from the declared shape; then the bytes.
        if len(shape) == 2 and self.frames + max(int(shape[1]), 0) > self.max_frames:
            seconds = self.max_frames / chunk.sample_rate
            raise ResourceExhausted(
                f"{self.field}: more than the limit of {self.max_frames} frames "
                f"({seconds:.0f} s at {chunk.sample_rate} Hz)"
            )
        self.nbytes += len(chunk.samples.data)
        if self.nbytes > self.max_bytes:
            raise ResourceExhausted(f"{self.field}: more than the limit of {self.max_bytes} bytes of audio")
        part = from_tensor(
            chunk.samples,
            field=f"{where}.samples",
            shape=(chunk.channels, None),
            dtypes=WIRE_AUDIO_DTYPES,
            finite=True,
        )
        self.frames += part.shape[1]
        self.sample_rate, self.channels = chunk.sample_rate, chunk.channels
        self.chunks += 1
        if self.keep:
            self._parts.append(part)
        return part

    def result(self) -> tuple[np.ndarray, int]:
        if not self.keep:
            raise ValueError("an AudioAssembler made with keep=False keeps no parts to put together")
        if self.frames == 0:
            raise InvalidInput(f"{self.field}: empty audio, the stream held no frames")
        return np.concatenate(self._parts, axis=1, dtype=np.float32), self.sample_rate


class AudioStreamReader:
    """A service's reading of one streamed audio input: an ``AudioAssembler`` created on the first
    chunk, whose caps follow from ``max_seconds`` at that chunk's rate — the frame cap, and a byte cap
    of those frames as stereo float32 (so a byte limit can never disagree with the length limit)."""

    def __init__(self, field: str, *, max_seconds: float, keep: bool = True) -> None:
        """``keep=False``: ``add`` checks and returns each part without keeping it (a reader that consumes
        the audio as it comes; ``result`` is then not available)."""
        self.field = field
        self.max_seconds = max_seconds
        self.keep = keep
        self._assembler: AudioAssembler | None = None

    @property
    def started(self) -> bool:
        """True once an audio chunk has arrived."""
        return self._assembler is not None

    @property
    def sample_rate(self) -> int:
        """The stream's rate (0 before the first chunk)."""
        return self._assembler.sample_rate if self._assembler is not None else 0

    def add(self, chunk: tensor_pb2.AudioChunk) -> np.ndarray:
        """Check ``chunk`` and return its float ``[channels, n]`` samples."""
        if self._assembler is None:
            frames = frames_limit(self.max_seconds, chunk.sample_rate) if chunk.sample_rate > 0 else 0
            self._assembler = AudioAssembler(self.field, max_frames=frames, max_bytes=max_audio_bytes(frames),
                                             keep=self.keep)
        return self._assembler.add(chunk)

    def result(self) -> tuple[np.ndarray, int]:
        """The float32 ``[channels, frames]`` audio and its rate."""
        if self._assembler is None:
            raise InvalidInput(f"{self.field}: empty, the stream held no audio chunks")
        return self._assembler.result()


def max_audio_bytes(frames: int) -> int:
    """Bytes of ``frames`` frames of the widest audio the wire carries (stereo float32)."""
    return frames * 2 * 4


def check_audio(audio: np.ndarray, sample_rate: int) -> None:
    """A backend's input check: float32 ``[channels, frames]``, 1-2 channels, frames, a sane rate, finite."""
    if not isinstance(audio, np.ndarray) or audio.ndim != 2:
        raise InvalidInput(f"audio: expected a [channels, frames] array, got {describe(audio)}")
    if audio.shape[0] not in WIRE_CHANNELS:
        raise InvalidInput(f"audio: expected 1 or 2 channels, got {audio.shape[0]}")
    if audio.shape[1] == 0:
        raise InvalidInput("audio: empty, no frames")
    if audio.dtype != np.float32:
        raise InvalidInput(f"audio: expected float32 samples, got {audio.dtype}")
    if not 1 <= sample_rate <= MAX_SAMPLE_RATE:
        raise InvalidInput(f"sample_rate: expected 1..{MAX_SAMPLE_RATE} Hz, got {sample_rate}")
    if not np.isfinite(audio).all():
        raise InvalidInput("audio: samples must be finite, found NaN or inf")


def frames_limit(seconds: float, sample_rate: int) -> int:
    """Frames in ``seconds`` of audio at ``sample_rate`` (for caps stated in seconds)."""
    return math.ceil(seconds * sample_rate)
