"""The pool step (DESIGN.md §1): per stem, mean and population std of the frame embeddings over time.

``a = concat_s [mean_s, std_s]`` with the stems in ``STEM_ORDER`` (vocals, drums, bass, other).

- ``pool_stems(frames_by_stem)`` — from whole ``[T, D]`` arrays (the in-process pipeline, tests).
- ``StemPool`` — the same numbers from frames as they stream in, a batch at a time, so that no one
  holds every frame of every stem: each batch's mean and sum of squared deviations (float64) are
  merged into the running ones (Chan, Golub & LeVeque's pairwise update), which is as exact as the
  two-pass formula and needs ``3 × D`` floats per stem.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from audiomemory.runtime.errors import FailedPrecondition, InvalidInput

STEM_ORDER: tuple[str, ...] = ("vocals", "drums", "bass", "other")


def pool_stems(frames_by_stem: Mapping[str, np.ndarray], order: tuple[str, ...] = STEM_ORDER) -> np.ndarray:
    """``a = concat_s [mean_s, std_s]`` over time, stems in ``order``; float32 ``[len(order) * 2 * D]``.

    ``frames_by_stem[name]`` is ``[T, D]`` frame embeddings. The std is the population std (ddof=0).
    """
    missing = [name for name in order if name not in frames_by_stem]
    if missing:
        raise FailedPrecondition(
            f"pooling needs the stems {list(order)}; missing {missing} (got {sorted(frames_by_stem)})"
        )
    pool = StemPool(order)
    for name in order:
        pool.add(order.index(name), np.asarray(frames_by_stem[name]))
    return pool.result()


class StemPool:
    """Running per-stem mean and population std of frame embeddings (``add`` batches, then ``result``)."""

    def __init__(self, order: tuple[str, ...] = STEM_ORDER) -> None:
        self.order = order
        self.dim: int | None = None
        self._count = [0] * len(order)
        self._mean: list[np.ndarray | None] = [None] * len(order)
        self._m2: list[np.ndarray | None] = [None] * len(order)  # sum of squared deviations from the mean

    def add(self, stem: int, frames: np.ndarray) -> None:
        """Pool ``frames`` ``[n, D]`` (the next frames of stem index ``stem``, any float dtype)."""
        name = self.order[stem]
        if frames.ndim != 2 or frames.shape[0] == 0:
            raise InvalidInput(f"stem {name!r}: frame embeddings must be [T>0, D], got shape {frames.shape}")
        if self.dim is not None and frames.shape[1] != self.dim:
            raise InvalidInput(f"stem {name!r}: embedding dim {frames.shape[1]} differs from {self.dim}")
        self.dim = frames.shape[1]
        x = np.asarray(frames, dtype=np.float64)
        n = x.shape[0]
        mean = x.mean(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        count, old_mean, old_m2 = self._count[stem], self._mean[stem], self._m2[stem]
        if count == 0 or old_mean is None or old_m2 is None:
            self._count[stem], self._mean[stem], self._m2[stem] = n, mean, m2
            return
        total = count + n
        delta = mean - old_mean
        self._mean[stem] = old_mean + delta * (n / total)
        self._m2[stem] = old_m2 + m2 + delta**2 * (count * n / total)
        self._count[stem] = total

    def result(self) -> np.ndarray:
        """``a`` as float32; every stem must have had at least one frame."""
        empty = [name for name, count in zip(self.order, self._count, strict=True) if count == 0]
        if empty:
            raise FailedPrecondition(f"pooling needs frames of every stem {list(self.order)}; none for {empty}")
        parts: list[np.ndarray] = []
        for count, mean, m2 in zip(self._count, self._mean, self._m2, strict=True):
            assert mean is not None and m2 is not None
            parts += [mean, np.sqrt(m2 / count)]
        return np.concatenate(parts).astype(np.float32)
