"""Streaming framing: audio of several signals in, batches of windows out, embeddings back per signal.

The framing rule (OpenL3's ``center=True``), for a model taking ``window`` samples every ``hop``
samples at ``sample_rate``:

- The input is mixed to mono (mean of the channels) and resampled to ``sample_rate`` with one
  ``soxr.ResampleStream`` per signal, so a signal can arrive in pieces of any size.
- The start is padded with ``window // 2`` zeros, so window ``i`` covers
  ``[i·hop − window/2, i·hop + window/2)`` of the input and its timestamp, ``i·hop / sample_rate``
  seconds, is the window's *centre*.
- The end is padded with zeros until the last window is whole: ``frame_count``. A clip shorter
  than half a window gives one frame (centred at 0 s).

A window is embedded as soon as its samples have arrived; a signal keeps only its unconsumed tail
(less than one window plus the last piece), never the whole signal. ``EmbedStream`` batches the
ready windows of all its signals into one model call of up to ``batch_size`` windows, so the four
stems of a song share each forward pass. ``embed_array`` (the one-shot path) runs the same code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soxr

from audiomemory.runtime.errors import Cancelled, InvalidInput


class WindowModel(Protocol):
    """What the framing needs from a backend: its facts and one batched call."""

    @property
    def sample_rate(self) -> int: ...
    @property
    def window(self) -> int: ...
    @property
    def hop(self) -> int: ...
    @property
    def embedding_dim(self) -> int: ...
    @property
    def batch_size(self) -> int: ...

    def hop_for(self, seconds: float) -> int: ...

    def embed_windows(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``[B, window]`` → float32 ``[B, D]``."""
        ...


def frame_count(samples: int, hop: int, window: int = 48_000) -> int:
    """T for ``samples`` samples at the model's rate (see the module docstring)."""
    padded = samples + window // 2
    if padded <= window:
        return 1
    return 1 + math.ceil((padded - window) / hop)


class SignalFramer:
    """One signal: mono mix, streaming resample, the unconsumed tail, and the windows it makes."""

    def __init__(self, sample_rate: int, window: int, hop: int) -> None:
        self.sample_rate = sample_rate
        self.window = window
        self.hop = hop
        self.input_rate = 0  # fixed by the first piece
        self.input_frames = 0  # frames received, at input_rate
        self.samples = 0  # samples at sample_rate produced so far (excluding the start padding)
        self.next_frame = 0  # index of the next window to hand out
        self.finished = False
        self._resampler: soxr.ResampleStream | None = None
        # The padded signal from padded index `_offset` on: starts as the window/2 zeros before it.
        self._tail = np.zeros(window // 2, dtype=np.float32)
        self._offset = 0

    def add(self, audio: np.ndarray, rate: int) -> None:
        """Append float ``[channels, frames]`` audio at ``rate`` (fixed by the first call)."""
        if self.input_rate == 0:
            self.input_rate = rate
            if rate != self.sample_rate:
                self._resampler = soxr.ResampleStream(rate, self.sample_rate, 1, dtype="float32", quality="HQ")
        mono = audio.mean(axis=0, dtype=np.float32) if audio.shape[0] > 1 else audio[0].astype(np.float32)
        self.input_frames += audio.shape[1]
        self._append(mono)

    def finish(self) -> None:
        """No more audio: flush the resampler and pad the end to a whole last window."""
        if self.finished:
            return
        self.finished = True
        if self._resampler is not None:
            self._append(np.zeros(0, np.float32), last=True)
        end = self.window // 2 + (self.frames - 1) * self.hop + self.window  # padded length
        have = self._offset + self._tail.shape[0]
        if end > have:
            self._tail = np.concatenate([self._tail, np.zeros(end - have, np.float32)])

    def _append(self, mono: np.ndarray, last: bool = False) -> None:
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(np.ascontiguousarray(mono), last=last)
        self.samples += mono.shape[0]
        if mono.shape[0]:
            self._tail = np.concatenate([self._tail, mono.astype(np.float32, copy=False)])

    @property
    def frames(self) -> int:
        """T so far: exact once ``finished``."""
        return frame_count(self.samples, self.hop, self.window)

    def ready(self) -> int:
        """Windows whose samples are all here and not handed out yet."""
        if self.finished:
            return self.frames - self.next_frame
        have = self._offset + self._tail.shape[0]  # padded samples received
        if have < self.window:
            return 0
        return max(0, (have - self.window) // self.hop + 1 - self.next_frame)

    def take(self, count: int, out: np.ndarray) -> int:
        """Copy the next ``count`` ready windows into ``out[:count]``; return the first one's index."""
        first = self.next_frame
        start = first * self.hop - self._offset
        view = np.lib.stride_tricks.as_strided(
            self._tail[start:], shape=(count, self.window), strides=(self.hop * 4, 4), writeable=False
        )
        out[:count] = view
        self.next_frame += count
        # Keep only what later windows still need: the tail from the next window's start on.
        drop = min(self.next_frame * self.hop - self._offset, self._tail.shape[0])
        self._tail = self._tail[drop:].copy() if drop > 0 else self._tail
        self._offset += drop
        return first


@dataclass
class Frames:
    """Embeddings of consecutive frames of one signal."""

    signal: int
    first: int
    embeddings: np.ndarray  # [n, D] float32

    def timestamps(self, hop_seconds: float) -> np.ndarray:
        """Centre of each frame's window, in seconds."""
        return (self.first + np.arange(self.embeddings.shape[0], dtype=np.float64)) * hop_seconds


class EmbedStream:
    """Several signals framed side by side; ready windows of all of them share each model call."""

    def __init__(
        self, model: WindowModel, signals: int, cancelled: Callable[[], bool] | None = None, hop: int | None = None
    ) -> None:
        self.model = model
        self.hop = hop or model.hop  # samples at the model's rate; every signal of the call uses it
        self.framers = [SignalFramer(model.sample_rate, model.window, self.hop) for _ in range(signals)]
        self.cancelled = cancelled
        self.done = 0  # frames embedded, all signals
        self._batch = np.empty((model.batch_size, model.window), dtype=np.float32)

    def add(self, signal: int, audio: np.ndarray, rate: int) -> Iterator[Frames]:
        """Append audio to one signal; embed (and yield) every full batch that is now ready."""
        self.framers[signal].add(audio, rate)
        yield from self._run(final=False)

    def finish(self) -> Iterator[Frames]:
        """End every signal and embed what is left."""
        for framer in self.framers:
            framer.finish()
        yield from self._run(final=True)

    def _run(self, final: bool) -> Iterator[Frames]:
        size = self.model.batch_size
        while (pending := sum(f.ready() for f in self.framers)) >= size or (final and pending > 0):
            if self.cancelled is not None and self.cancelled():
                raise Cancelled("embed: the caller cancelled the request")
            parts: list[tuple[int, int, int]] = []  # (signal, first frame, rows)
            filled = 0
            for signal, framer in enumerate(self.framers):
                count = min(framer.ready(), size - filled)
                if count > 0:
                    parts.append((signal, framer.take(count, self._batch[filled:]), count))
                    filled += count
            embeddings = np.asarray(self.model.embed_windows(self._batch[:filled]), dtype=np.float32)
            self.done += filled
            row = 0
            for signal, first, count in parts:
                yield Frames(signal, first, embeddings[row : row + count])
                row += count


def embed_array(
    model: WindowModel, audio: np.ndarray, sample_rate: int, cancelled: Callable[[], bool] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One whole signal through ``EmbedStream``: ``(embeddings [T, D] float32, timestamps [T] float64)``."""
    if audio.shape[1] == 0:
        raise InvalidInput("audio: empty, no frames")
    stream = EmbedStream(model, 1, cancelled, hop=model.hop_for(audio.shape[1] / sample_rate))
    parts = [*stream.add(0, audio, sample_rate), *stream.finish()]
    count = stream.framers[0].frames
    embeddings = np.concatenate([p.embeddings for p in parts]) if parts else np.empty((0, model.embedding_dim))
    timestamps = np.arange(count, dtype=np.float64) * (stream.hop / model.sample_rate)
    return embeddings.astype(np.float32, copy=False), timestamps
