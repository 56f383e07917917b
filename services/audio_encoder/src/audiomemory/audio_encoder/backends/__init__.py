"""The audio encoder backend contract: facts about the windows a model takes, and one batched call.

A backend states its ``sample_rate``, its ``window`` and ``hop`` (samples at that rate), its
``embedding_dim`` and ``batch_size``, and implements ``embed_windows`` ([B, window] → [B, D]).
Framing, resampling, batching across signals and streaming live in ``audiomemory.audio_encoder.stream``,
shared by every backend; ``embed`` (one whole signal, for in-process callers) runs that same code,
so it gives the numbers the gRPC service streams.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from audiomemory.audio_encoder.stream import embed_array
from audiomemory.runtime.audio import check_audio
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
    def window(self) -> int:
        """Samples (at ``sample_rate``) one frame sees."""

    @property
    @abstractmethod
    def hop(self) -> int:
        """Samples (at ``sample_rate``) between consecutive frames."""

    @property
    @abstractmethod
    def batch_size(self) -> int:
        """Most windows in one ``embed_windows`` call (bounds memory)."""

    def hop_for(self, seconds: float) -> int:
        """The hop (samples at ``sample_rate``) for a signal ``seconds`` long; ``hop`` unless overridden."""
        return self.hop

    @property
    def hop_seconds(self) -> float:
        """Seconds between consecutive frames."""
        return self.hop / self.sample_rate

    @property
    def window_seconds(self) -> float:
        """Seconds of audio one frame sees."""
        return self.window / self.sample_rate

    @abstractmethod
    def embed_windows(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``[B, window]`` (B ≤ ``batch_size``) → float32 ``[B, D]``; ``batch`` is only read."""

    def embed(
        self, audio: np.ndarray, sample_rate: int, *, cancelled: CancelCheck | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Frame embeddings of one whole float32 ``[channels, frames]`` signal at ``sample_rate``.

        Returns ``(embeddings [T, D] float32, timestamps [T] float64 seconds)``, the same numbers the
        service streams for that signal; never modifies ``audio``. Raises ``InvalidInput`` for audio
        it cannot take and ``Cancelled`` when ``cancelled()`` turns true between batches.
        """
        check_audio(audio, sample_rate)
        return embed_array(self, audio, sample_rate, cancelled)
