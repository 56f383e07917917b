"""Audio format conversions the separator needs (soxr for rates; no hand-written resampler).

Whole-array helpers (``resample``, ``to_output_format``) and their streaming forms for whole songs:
``SongBuffer`` builds the model's input from the uploaded parts as they arrive, and ``StemConverter``
turns blocks of stems into the caller's format with one ``soxr.ResampleStream`` per stem, continuous
across blocks, so neither the song's input nor its stems is ever converted as one array.
"""

from __future__ import annotations

import numpy as np
import soxr

from audiomemory.runtime.memory import song_array

FLOAT16_MAX = float(np.finfo(np.float16).max)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """float32 ``[channels, frames]`` at ``from_rate`` → ``[channels, ≈frames·to/from]`` (soxr HQ)."""
    if from_rate == to_rate:
        return audio
    out = soxr.resample(np.ascontiguousarray(audio.T), from_rate, to_rate)
    return np.ascontiguousarray(out.T, dtype=np.float32)


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """``[c, n]`` → ``[channels, n]``: mono is duplicated, stereo is averaged to mono."""
    if audio.shape[0] == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True, dtype=np.float32)
    return np.repeat(audio[:1], channels, axis=0)


def fit_length(audio: np.ndarray, frames: int) -> np.ndarray:
    """Trim, or pad with zeros, to exactly ``frames`` (resampler rounding differs by a frame or so)."""
    have = audio.shape[-1]
    if have == frames:
        return audio
    if have > frames:
        return audio[..., :frames]
    pad = np.zeros((*audio.shape[:-1], frames - have), dtype=audio.dtype)
    return np.concatenate([audio, pad], axis=-1)


def expected_frames(frames: int, from_rate: int, to_rate: int) -> int:
    """The length of ``frames`` at ``from_rate`` once expressed at ``to_rate`` (same duration)."""
    return max(1, round(frames * to_rate / from_rate))


def to_output_format(audio: np.ndarray, rate: int, to_rate: int, channels: int, frames: int, *,
                     float16: bool) -> np.ndarray:
    """One stem as a caller asked for it: ``to_rate``, ``channels``, exactly ``frames`` long, and clipped
    to float16's range when it travels as float16 (the receiver rejects the inf an overflow would make)."""
    out = fit_length(to_channels(resample(audio, rate, to_rate), channels), frames)
    return np.clip(out, -FLOAT16_MAX, FLOAT16_MAX) if float16 else out


def _stream(from_rate: int, to_rate: int, channels: int) -> soxr.ResampleStream:
    # "HQ": the quality soxr.resample (the whole-array path above) uses by default.
    return soxr.ResampleStream(from_rate, to_rate, channels, dtype="float32", quality="HQ")


def _resample_part(stream: soxr.ResampleStream | None, part: np.ndarray, last: bool = False) -> np.ndarray:
    if stream is None:
        return part
    out = stream.resample_chunk(np.ascontiguousarray(part.T, dtype=np.float32), last=last)
    return np.asarray(out, dtype=np.float32).T


class SongBuffer:
    """A song at ``to_rate`` and ``channels``, converted part by part as the parts arrive, into one
    float32 array reserved for the longest song allowed (``max_frames`` at ``from_rate``). The
    reservation is virtual (``runtime.memory.song_array``, an mmap of its own): the OS commits pages only
    as they are written, so a short song costs its own length, and all of them go back when it is freed;
    no part outlives its conversion and no whole-song intermediate is ever made."""

    def __init__(self, from_rate: int, to_rate: int, channels: int, max_frames: int) -> None:
        self._rates = (from_rate, to_rate)
        self._out = song_array((channels, expected_frames(max_frames, from_rate, to_rate)))
        self._stream: soxr.ResampleStream | None = None
        self._channels_in = 0
        self.frames_in = 0
        self._filled = 0

    def _put(self, block: np.ndarray) -> None:
        n = min(block.shape[1], self._out.shape[1] - self._filled)
        self._out[:, self._filled : self._filled + n] = to_channels(block[:, :n], self._out.shape[0])
        self._filled += n

    def add(self, part: np.ndarray) -> None:
        """The next ``[c, n]`` frames at ``from_rate`` (float32 or float16)."""
        self._channels_in, self.frames_in = part.shape[0], self.frames_in + part.shape[1]
        if self._stream is None and self._rates[0] != self._rates[1]:
            self._stream = _stream(*self._rates, self._channels_in)
        self._put(_resample_part(self._stream, part))

    def result(self) -> np.ndarray:
        """The song: ``[channels, expected_frames(frames_in, from_rate, to_rate)]``, a view of the one array
        (zeros where a resampler came out a frame short, as ``fit_length`` pads)."""
        if self._stream is not None:
            self._put(_resample_part(self._stream, np.zeros((self._channels_in, 0), np.float32), last=True))
            self._stream = None
        return self._out[:, : expected_frames(self.frames_in, *self._rates)]


def assemble(audio: np.ndarray, from_rate: int, to_rate: int, channels: int) -> np.ndarray:
    """A whole ``[c, n]`` array as a new float32 ``[channels, expected_frames(n, from_rate, to_rate)]`` one."""
    song = SongBuffer(from_rate, to_rate, channels, audio.shape[1])
    song.add(audio)
    return song.result()


class StemConverter:
    """Blocks of stems at the model's rate → the caller's rate, channels and exactly ``frames`` frames,
    as ``to_output_format`` converts a whole stem (resample, then channels, then float16 clipping)."""

    def __init__(self, stems: int, channels_in: int, rate: int, to_rate: int, channels: int, frames: int, *,
                 float16: bool) -> None:
        self._streams = [_stream(rate, to_rate, channels_in) for _ in range(stems)] if rate != to_rate else None
        self._stems = stems
        self._channels_in = channels_in
        self._channels = channels
        self._frames = frames
        self._float16 = float16
        self.sent = 0

    def convert(self, block: np.ndarray, *, last: bool = False) -> np.ndarray:
        """``[stems, channels_in, n]`` → ``[stems, channels, m]``: the next frames of every stem (the same
        frames for all; ``last=True`` flushes the resamplers and pads to ``frames``)."""
        if self._streams is None:
            rows = list(block)
        else:
            rows = [_resample_part(s, stem, last) for s, stem in zip(self._streams, block, strict=True)]
        out = np.stack([to_channels(row, self._channels) for row in rows]).astype(np.float32, copy=False)
        out = out[..., : self._frames - self.sent]
        if last and self.sent + out.shape[-1] < self._frames:
            out = fit_length(out, self._frames - self.sent)
        self.sent += out.shape[-1]
        return np.clip(out, -FLOAT16_MAX, FLOAT16_MAX) if self._float16 else out

    def finish(self) -> np.ndarray:
        """The stems' last frames: what the resamplers still hold, then zeros up to ``frames``."""
        return self.convert(np.zeros((self._stems, self._channels_in, 0), np.float32), last=True)
