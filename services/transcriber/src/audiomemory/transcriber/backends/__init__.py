"""The transcriber backend contract: the model's facts and one call that reads one window of audio.

A backend states its ``sample_rate`` and ``window`` (samples it reads at once) and implements
``decode_window``: mono float32 audio of at most ``window`` samples at ``sample_rate`` → ``Heard`` (the
window's finished segments, the one its end cut if any, its language, and which guard dropped its text).
Mixing, resampling, windowing and the silence gate live in ``audiomemory.transcriber.stream`` (which needs
only a ``WindowReader``, so the two modules do not import each other), shared by every backend;
``transcribe`` (one whole signal, for in-process callers) runs that same code, so it gives the transcript
the gRPC service streams.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from audiomemory.runtime.audio import check_audio
from audiomemory.runtime.backend import Backend, CancelCheck
from audiomemory.runtime.transcript import Segment, Transcript
from audiomemory.transcriber.config import TranscriberConfig
from audiomemory.transcriber.stream import Heard, TranscribeStream

__all__ = ["Heard", "Segment", "TranscriberBackend", "Transcript"]


class TranscriberBackend(Backend):
    """Base of every transcriber backend."""

    def __init__(self, config: TranscriberConfig) -> None:
        super().__init__(config)
        self.config: TranscriberConfig = config

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Rate the model works at; other rates are resampled (valid after ``load``)."""

    @property
    @abstractmethod
    def window(self) -> int:
        """Samples (at ``sample_rate``) the model reads at once."""

    @abstractmethod
    def decode_window(self, audio: np.ndarray, language: str | None) -> Heard:
        """float32 mono ``[n]`` (n ≤ ``window``) at ``sample_rate`` → what was heard; ``language`` None = detect."""

    def transcribe(
        self, audio: np.ndarray, sample_rate: int, *, language: str | None = None,
        cancelled: CancelCheck | None = None,
    ) -> Transcript:
        """The transcript of one whole float32 ``[channels, frames]`` signal: what the service answers for it."""
        check_audio(audio, sample_rate)
        stream = TranscribeStream(self, language, cancelled)
        for _ in stream.add(audio, sample_rate):
            pass
        for _ in stream.finish():
            pass
        return stream.result()
