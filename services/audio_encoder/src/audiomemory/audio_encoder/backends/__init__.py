"""The audio encoder backend contract: audio in, frame embeddings and timestamps out (numpy only)."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from audiomemory.runtime.backend import Backend, CancelCheck
from audiomemory.runtime.errors import Cancelled

__all__ = ["AudioEncoderBackend", "CancelCheck", "Cancelled"]



class AudioEncoderBackend(Backend):
    """Base of every audio encoder backend."""

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Rate the model works at; other rates are resampled (valid after ``load``)."""

    @property
    @abstractmethod
    def channels(self) -> int:
        """Channels the model works with (valid after ``load``)."""

    @property
    @abstractmethod
    def embedding_dim(self) -> int:
        """D, the size of one frame embedding (valid after ``load``)."""

    @property
    @abstractmethod
    def hop_seconds(self) -> float:
        """Seconds between consecutive frames."""

    @property
    @abstractmethod
    def window_seconds(self) -> float:
        """Seconds of audio one frame sees."""

    @abstractmethod
    def embed(
        self, audio: np.ndarray, sample_rate: int, *, cancelled: CancelCheck | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Frame embeddings of float32 ``[channels, frames]`` audio at ``sample_rate``.

        Returns ``(embeddings [T, D] float32, timestamps [T] float64 seconds)``; never modifies
        ``audio``. Raises ``InvalidInput`` for audio it cannot take and ``Cancelled`` when
        ``cancelled()`` turns true.
        """

