"""Streaming windowing: a signal's audio in, in pieces of any size, a transcript out (Whisper's long form).

- The input is mixed to mono (mean of the channels) and resampled to the model's rate with one
  ``soxr.ResampleStream``, so the signal can arrive in pieces of any size at any rate (the orchestrator
  sends the vocal stem at the audio encoder's 48 kHz).
- A window (30 s for Whisper) is read as soon as its audio has arrived; the stream keeps only the
  unread tail, never the whole signal.
- After a window, the next starts where its last *finished* segment ended (``Heard.unfinished``): a line
  cut by the window's edge is read again, whole, at the start of the next one (openai-whisper's seek).
- The silence gate: a window whose RMS level is below ``silence_dbfs`` is not decoded at all — an
  instrumental's vocal stem is near-silent, and Whisper is known to invent text for silence. The
  model-side guards (no-speech probability, compression ratio) are the backend's.
- Segment times are seconds from the start of the signal; the last window is zero-padded by the model's
  feature extractor, and no segment ends after the signal does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soxr

from audiomemory.runtime.backend import CancelCheck
from audiomemory.runtime.errors import Cancelled
from audiomemory.runtime.transcript import Segment, Transcript
from audiomemory.transcriber.config import TranscriberConfig


@dataclass(frozen=True)
class Heard:
    """What one window held."""

    segments: tuple[Segment, ...]  # the finished segments, seconds from the window's start, in order
    language: str  # code of the language the window was read in
    unfinished: Segment | None = None  # a last segment the window's end cut (no closing timestamp)
    dropped: str = ""  # the guard that threw the window's text away ("" = kept)


class WindowReader(Protocol):
    """What the windowing needs from a backend (``backends.TranscriberBackend``): its facts and one call."""

    config: TranscriberConfig

    @property
    def sample_rate(self) -> int: ...
    @property
    def window(self) -> int: ...

    def decode_window(self, audio: np.ndarray, language: str | None) -> Heard:
        """float32 mono ``[n]`` (n ≤ ``window``) at ``sample_rate`` → what was heard."""
        ...


def level_dbfs(audio: np.ndarray) -> float:
    """RMS level of ``audio`` in dB relative to full scale (-inf for digital silence)."""
    if audio.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


class TranscribeStream:
    """One signal, window by window; ``add``/``finish`` yield the seconds done after each window."""

    def __init__(self, model: WindowReader, language: str | None = None,
                 cancelled: CancelCheck | None = None) -> None:
        self.model = model
        self.language = language or model.config.language
        self.silence_dbfs = model.config.silence_dbfs
        self.cancelled = cancelled
        self.input_rate = 0
        self._resampler: soxr.ResampleStream | None = None
        self._tail = np.zeros(0, np.float32)  # unread audio at the model's rate
        self._start = 0  # sample index (model rate) of _tail[0] in the signal
        self.samples = 0  # samples at the model's rate received so far
        self.segments: list[Segment] = []
        self.languages: Counter[str] = Counter()
        self.windows = 0  # model calls made

    @property
    def seconds(self) -> float:
        return self.samples / self.model.sample_rate

    def add(self, audio: np.ndarray, rate: int) -> Iterator[float]:
        """Append float ``[channels, frames]`` audio at ``rate`` (fixed by the first call); read whole windows."""
        if self.input_rate == 0:
            self.input_rate = rate
            if rate != self.model.sample_rate:
                self._resampler = soxr.ResampleStream(rate, self.model.sample_rate, 1, dtype="float32", quality="HQ")
        mono = audio.mean(axis=0, dtype=np.float32) if audio.shape[0] > 1 else audio[0].astype(np.float32)
        self._append(mono, last=False)
        while self._tail.shape[0] >= self.model.window:
            yield self._read(final=False)

    def finish(self) -> Iterator[float]:
        """No more audio: flush the resampler and read what is left."""
        if self._resampler is not None:
            self._append(np.zeros(0, np.float32), last=True)
        while self._tail.shape[0] > 0:
            yield self._read(final=True)

    def result(self) -> Transcript:
        language = self.languages.most_common(1)[0][0] if self.languages else ""
        return Transcript.of(self.segments, language, self.seconds)

    def _append(self, mono: np.ndarray, last: bool) -> None:
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(np.ascontiguousarray(mono), last=last)
        self.samples += mono.shape[0]
        if mono.shape[0]:
            self._tail = np.concatenate([self._tail, mono.astype(np.float32, copy=False)])

    def _read(self, final: bool) -> float:
        """Read the window at the head of the tail; drop what it accounted for; return the seconds done."""
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("transcribe: the caller cancelled the request")
        window = self._tail[: self.model.window]
        consumed = window.shape[0]
        if self.silence_dbfs is None or level_dbfs(window) >= self.silence_dbfs:
            heard = self.model.decode_window(window, self.language)
            self.windows += 1
            segments = heard.segments
            cut = heard.unfinished
            if cut is not None and not final and cut.start > 0:
                # Read the cut line again, whole, from its start (the last window has no next one).
                consumed = min(max(round(cut.start * self.model.sample_rate), 1), window.shape[0])
            elif cut is not None:
                segments = (*segments, cut)
            self._keep(segments, heard.language)
        self._tail = self._tail[consumed:]
        self._start += consumed
        return self._start / self.model.sample_rate

    def _keep(self, segments: tuple[Segment, ...], language: str) -> None:
        offset = self._start / self.model.sample_rate
        for segment in segments:
            if offset + segment.start >= self.seconds:
                continue  # in the zero padding after the signal's end: nothing was sung there
            end = min(offset + segment.end, self.seconds)
            start = min(offset + segment.start, end)
            self.segments.append(Segment(start, end, segment.text))
        if segments:
            self.languages[language] += 1
