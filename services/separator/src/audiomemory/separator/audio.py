"""Audio format conversions the separator needs (soxr for rates; no hand-written resampler)."""

from __future__ import annotations

import numpy as np
import soxr

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
