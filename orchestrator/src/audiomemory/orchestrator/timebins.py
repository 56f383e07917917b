"""The song's time axis, kept cheaply (DESIGN.md §11): per stem, the frame embeddings' statistics in one-second bins.

Frame i of the audio encoder is centred at ``i · hop`` (DESIGN.md §1); it falls in bin ``floor(i · hop)``
(exact integer arithmetic on the hop in samples), the song's last bin taking the frames centred past its end.
A song of ``S`` seconds (``bin_count``: ``ceil`` of its length) has ``S`` bins per stem, each holding

- ``counts[stem, s]`` — how many frames fell in it,
- ``sums[stem, s, :]`` — their sum, per dimension,
- ``m2[stem, s, :]`` — their sum of squared deviations from the bin's own mean, per dimension (the *centred*
  sum of squares: the same information as the raw sum of squares, without its cancellation when a span's
  variance is formed),

float32 when stored (4 stems × 512 dimensions × 2 × 4 B = 16 KB a second: ~4 MB for a 4-minute song, ~20 MB for
20 minutes), float64 while a bin is being filled and whenever a span's statistics are formed. ``Bins.pooled(span)``
is the pool step of DESIGN.md §1 over the frames of those seconds — ``concat_s [mean_s, std_s]`` (population
std), stems in ``STEM_ORDER`` — merged from the bins with Chan, Golub & LeVeque's pairwise update (float64).

- ``BinPool`` — fills the bins as frames stream in (``add`` a stem's next frames, then ``result``); one open bin
  per stem is held in float64, the closed ones are written to the float32 arrays.
- ``Bins`` — the stored statistics: ``pooled(span)``, ``means()`` (per-second means, for ``sections.py``),
  ``seconds``.

The whole-song vector ``a`` is not made from the bins: ``pooling.StemPool`` keeps making it as before, so it is
bit-identical to what it was (the bins' ``pooled((0, seconds))`` agrees with it to float32 rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audiomemory.orchestrator.pooling import STEM_ORDER
from audiomemory.runtime.errors import FailedPrecondition, InvalidInput

Span = tuple[int, int]  # [start_s, end_s), whole seconds


def bin_count(seconds: float) -> int:
    """How many one-second bins a song of ``seconds`` has: ``ceil(seconds)``, at least 1 — also the largest
    ``end_s`` a span of it may have."""
    return max(1, math.ceil(seconds))


@dataclass(frozen=True, eq=False)
class Bins:
    """Per-stem statistics of the frame embeddings in one-second bins (see the module docstring)."""

    counts: np.ndarray  # int32 [stems, seconds]
    sums: np.ndarray  # float32 [stems, seconds, D]
    m2: np.ndarray  # float32 [stems, seconds, D]

    def __post_init__(self) -> None:
        problem = bins_problem(self.counts, self.sums, self.m2)
        if problem:
            raise FailedPrecondition(f"time bins: {problem}")

    @property
    def seconds(self) -> int:
        """The number of bins: the song's length in whole seconds, rounded up."""
        return int(self.counts.shape[1])

    @property
    def stems(self) -> int:
        return int(self.counts.shape[0])

    @property
    def dim(self) -> int:
        return int(self.sums.shape[2])

    @property
    def nbytes(self) -> int:
        return int(self.counts.nbytes + self.sums.nbytes + self.m2.nbytes)

    def check_span(self, span: Span) -> None:
        """INVALID_ARGUMENT unless ``0 <= start < end <= seconds``."""
        check_span(span, self.seconds)

    def pooled(self, span: Span | None = None) -> np.ndarray:
        """The pooled vector of the frames in ``[start, end)`` (``None``: every bin): float32
        ``[stems · 2 · D]``, per stem the mean then the population std, stems in order."""
        start, end = (0, self.seconds) if span is None else span
        self.check_span((start, end))
        parts: list[np.ndarray] = []
        for stem in range(self.stems):
            counts = self.counts[stem, start:end].astype(np.float64)
            total = counts.sum()
            if total == 0:
                raise FailedPrecondition(
                    f"span [{start}, {end}) s holds no frame of the {_name(stem)} stem (the audio encoder's hop "
                    "is longer than the span)")
            sums = self.sums[stem, start:end].astype(np.float64)
            mean = sums.sum(axis=0) / total
            filled = counts > 0
            bin_means = sums[filled] / counts[filled, None]
            m2 = self.m2[stem, start:end][filled].astype(np.float64).sum(axis=0) + \
                (counts[filled, None] * (bin_means - mean) ** 2).sum(axis=0)
            parts += [mean, np.sqrt(np.maximum(m2, 0.0) / total)]
        return np.concatenate(parts).astype(np.float32)

    def means(self, inner: bool = False) -> np.ndarray:
        """Per-second means of every stem side by side: float64 ``[seconds, stems · D]``. A bin without frames
        (a hop over a second long) takes the nearest filled bin's mean (the earlier one of two as near).
        ``inner``: the first and the last second take their nearest inner second's mean too — their frames'
        windows reach past the song's ends (the encoder centres its windows and pads the song with silence),
        so they describe the silence as much as the music."""
        counts = self.counts.astype(np.float64)  # [stems, S]
        filled = counts > 0
        if inner and self.seconds >= 3:
            filled[:, [0, -1]] = False
        means = np.zeros(self.sums.shape, np.float64)
        np.divide(self.sums, counts[..., None], out=means, where=filled[..., None])
        for stem in range(self.stems):
            have = np.flatnonzero(filled[stem])
            if have.size == 0:
                raise FailedPrecondition(f"the {_name(stem)} stem has no frames")
            after = np.clip(np.searchsorted(have, np.arange(self.seconds)), 0, have.size - 1)
            before = np.clip(after - 1, 0, None)
            seconds = np.arange(self.seconds)
            nearer = np.abs(have[before] - seconds) <= np.abs(have[after] - seconds)
            means[stem] = means[stem, np.where(nearer, have[before], have[after])]
        return means.transpose(1, 0, 2).reshape(self.seconds, self.stems * self.dim)


def check_span(span: Span, seconds: int, what: str = "the song's length rounded up") -> None:
    """INVALID_ARGUMENT naming ``options.span`` unless ``0 <= start_s < end_s <= seconds`` (``what`` says what
    ``seconds`` is)."""
    start, end = span
    if not 0 <= start < end <= seconds:
        raise InvalidInput(f"options.span: whole seconds [start_s, end_s) with 0 <= start_s < end_s <= {seconds} "
                           f"({what}), got [{start}, {end})")


def bins_problem(counts: np.ndarray, sums: np.ndarray, m2: np.ndarray) -> str:
    """What is wrong with three arrays as ``Bins`` (``""``: nothing): shapes, dtypes, values."""
    if counts.dtype != np.int32 or sums.dtype != np.float32 or m2.dtype != np.float32:
        return f"dtypes {counts.dtype}, {sums.dtype}, {m2.dtype}; expected int32, float32, float32"
    if counts.ndim != 2 or sums.ndim != 3 or sums.shape != m2.shape or sums.shape[:2] != counts.shape:
        return f"shapes {counts.shape}, {sums.shape}, {m2.shape}; expected [stems, S], [stems, S, D] twice"
    if 0 in sums.shape:
        return f"empty shape {sums.shape}"
    if (counts < 0).any() or not (np.isfinite(sums).all() and np.isfinite(m2).all()) or (m2 < 0).any():
        return "negative counts, negative or non-finite sums"
    return ""


class BinPool:
    """Fills ``Bins`` from frames as they stream in, each stem's in time order (``add``, then ``result``).

    ``hop`` and ``sample_rate`` are the audio encoder's (frame i is centred at sample ``i · hop``), ``seconds``
    the song's bin count, ``dim`` the embedding's size.
    """

    def __init__(self, seconds: int, hop: int, sample_rate: int, dim: int, stems: int = len(STEM_ORDER)) -> None:
        if hop < 1 or sample_rate < 1 or seconds < 1 or dim < 1:
            raise FailedPrecondition(f"time bins: hop {hop}, rate {sample_rate}, {seconds} s, dim {dim}")
        self.hop, self.rate, self.dim = hop, sample_rate, dim
        self.counts = np.zeros((stems, seconds), np.int32)
        self.sums = np.zeros((stems, seconds, dim), np.float32)
        self.m2 = np.zeros((stems, seconds, dim), np.float32)
        self._next = [0] * stems  # each stem's next frame index
        # each stem's open bin: (bin, count, mean, m2) in float64, or None
        self._open: list[tuple[int, int, np.ndarray, np.ndarray] | None] = [None] * stems

    def add(self, stem: int, frames: np.ndarray) -> None:
        """The next ``[n, D]`` frames of ``stem``."""
        if frames.ndim != 2 or frames.shape[1] != self.dim:
            raise InvalidInput(f"time bins: frames of stem {stem} must be [n, {self.dim}], got {frames.shape}")
        n = frames.shape[0]
        if n == 0:
            return
        index = np.arange(self._next[stem], self._next[stem] + n, dtype=np.int64)
        self._next[stem] += n
        bins = np.minimum(index * self.hop // self.rate, self.counts.shape[1] - 1)
        x = np.asarray(frames, np.float64)
        starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        sizes = np.diff(np.r_[starts, n])
        means = np.add.reduceat(x, starts, axis=0) / sizes[:, None]
        m2s = np.add.reduceat((x - np.repeat(means, sizes, axis=0)) ** 2, starts, axis=0)
        for group, start in enumerate(starts):
            self._merge(stem, int(bins[start]), int(sizes[group]), means[group], m2s[group])

    def _merge(self, stem: int, where: int, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        """Merge a group of frames of one bin into the stem's open bin (closing the open one when it is another)."""
        opened = self._open[stem]
        if opened is not None and opened[0] == where:
            _, count, old_mean, old_m2 = opened
            total = count + n
            delta = mean - old_mean
            self._open[stem] = (where, total, old_mean + delta * (n / total),
                                old_m2 + m2 + delta**2 * (count * n / total))
            return
        self._close(stem)
        self._open[stem] = (where, n, mean, m2)

    def _close(self, stem: int) -> None:
        opened = self._open[stem]
        if opened is None:
            return
        where, count, mean, m2 = opened
        self.counts[stem, where] = count
        self.sums[stem, where] = mean * count
        self.m2[stem, where] = m2
        self._open[stem] = None

    def result(self) -> Bins:
        for stem in range(len(self._open)):
            self._close(stem)
        return Bins(self.counts, self.sums, self.m2)


def _name(stem: int) -> str:
    return STEM_ORDER[stem] if stem < len(STEM_ORDER) else f"#{stem}"
