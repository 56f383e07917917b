"""The separator backend contract: audio in, named stems out (numpy in, numpy out; no protobuf).

A backend implements ``load``/``describe`` (from ``audiomemory.runtime.backend.Backend``), the
I/O facts of the loaded model (``stems``, ``sample_rate``, ``channels``) and ``separate``.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import numpy as np

from audiomemory.runtime.backend import Backend, CancelCheck
from audiomemory.runtime.errors import Cancelled

__all__ = ["CancelCheck", "Cancelled", "SeparatorBackend", "Stems"]



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
    def separate(
        self, audio: np.ndarray, sample_rate: int, *, cancelled: CancelCheck | None = None
    ) -> Stems:
        """Split float32 ``[channels, frames]`` audio (1 or 2 channels, any rate) into stems.

        Never modifies ``audio``. Raises ``InvalidInput`` for audio it cannot take and
        ``Cancelled`` (``audiomemory.runtime.errors``) when ``cancelled()`` turns true.
        """

