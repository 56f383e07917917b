"""The separator backend contract: audio in, named stems out (numpy in, numpy out; no protobuf).

A backend implements ``load``/``describe`` (from ``audiomemory.runtime.backend.Backend``), the
I/O facts of the loaded model (``stems``, ``sample_rate``, ``channels``) and ``separate_blocks``: the
stems as ``StemBlock``s in time order, each handed out as soon as that stretch is separated, so a whole
song never has to sit in memory as output. ``separate`` (the whole song at once) is built on them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from audiomemory.runtime.audio import check_audio
from audiomemory.runtime.backend import Backend, CancelCheck
from audiomemory.runtime.errors import Cancelled
from audiomemory.separator.audio import expected_frames

__all__ = ["CancelCheck", "Cancelled", "SeparatorBackend", "StemBlock", "Stems"]


@dataclass(frozen=True)
class Stems:
    """Separated stems at the model's rate.

    ``audio`` is float32 ``[len(names), channels, frames]``; ``frames`` equals the input duration
    at ``sample_rate`` (±1 frame of resampling rounding).
    """

    names: tuple[str, ...]
    sample_rate: int
    audio: np.ndarray

    def __post_init__(self) -> None:
        if self.audio.ndim != 3 or self.audio.shape[0] != len(self.names):
            raise ValueError(f"stems audio must be [{len(self.names)}, channels, frames], got {self.audio.shape}")


@dataclass(frozen=True)
class StemBlock:
    """One stretch of every stem at the model's rate: float32 ``audio`` ``[stems, channels, n]`` covering
    frames ``start .. start + n`` of the song (at the model's rate), final once handed out."""

    start: int
    audio: np.ndarray

    def __post_init__(self) -> None:
        if self.audio.ndim != 3:
            raise ValueError(f"stem block audio must be [stems, channels, frames], got {self.audio.shape}")

    @property
    def frames(self) -> int:
        return int(self.audio.shape[-1])


class SeparatorBackend(Backend):
    """Base of every separator backend."""

    @property
    @abstractmethod
    def stems(self) -> tuple[str, ...]:
        """Stem names in the model's order (valid after ``load``)."""

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Rate the model works at (valid after ``load``)."""

    @property
    @abstractmethod
    def channels(self) -> int:
        """Channels the model works with (valid after ``load``)."""

    @abstractmethod
    def separate_blocks(
        self, audio: np.ndarray, sample_rate: int, *, cancelled: CancelCheck | None = None, donate: bool = False
    ) -> Iterator[StemBlock]:
        """Split float32 ``[channels, frames]`` audio (1 or 2 channels, any rate) into stems, yielded as
        consecutive ``StemBlock``s from frame 0 that together cover exactly
        ``expected_frames(frames, sample_rate, self.sample_rate)`` frames at the model's rate.

        Never modifies ``audio`` unless ``donate``: then the caller hands the array over (it must not
        use it again) and the backend may work in it in place, so the song is not held twice. Raises
        ``InvalidInput`` for audio it cannot take and ``Cancelled`` when ``cancelled()`` turns true.
        """

    def separate(
        self, audio: np.ndarray, sample_rate: int, *, cancelled: CancelCheck | None = None
    ) -> Stems:
        """The whole song at once: the blocks of ``separate_blocks`` put together (never modifies ``audio``)."""
        check_audio(audio, sample_rate)
        frames = expected_frames(audio.shape[-1], sample_rate, self.sample_rate)
        out: np.ndarray | None = None
        for block in self.separate_blocks(audio, sample_rate, cancelled=cancelled):
            if out is None:
                out = np.empty((block.audio.shape[0], block.audio.shape[1], frames), np.float32)
            out[..., block.start : block.start + block.frames] = block.audio
        assert out is not None, "separate_blocks yields at least one block for valid audio"
        return Stems(names=self.stems, sample_rate=self.sample_rate, audio=out)
