"""A song's sections, found in its own time bins (DESIGN.md §11): change points of its per-second features.

- ``section_ask(sections, min_seconds, max_sections, defaults)`` — a request's section settings (``ReelOptions``:
  0 = the orchestrator's default), checked: INVALID_ARGUMENT naming the field, the limit and what came.
- ``features(bins)`` — one row a second: every stem's per-second mean embedding side by side (the first and
  last second taken from their inner neighbours: their windows reach into the silence past the song's ends),
  each dimension standardised robustly over the song (median, median absolute deviation) and clipped at ±3,
  reduced to its ``COMPONENTS`` principal components (their scores, unwhitened: a component weighs what it
  varies; randomized SVD, seeded).
- ``find_sections(bins, ask)`` — the spans ``[start_s, end_s)`` covering the song, boundaries on whole seconds,
  every section at least ``min_seconds`` long (a song shorter than two of them is one section).

The change points are the optimal segmentation under the L2 cost (the sum of squared distances of each
second's features to its section's mean) — ruptures' ``KernelCPD`` with the linear kernel, dynamic programming
in C, ``min_size`` = the shortest section. Exactly ``N`` sections when asked; else the count ``K`` (1 … the
maximum that fits) minimising ``cost(K) + β · (K − 1)``, where a new boundary must pay
``β = max(2 · log(S) · v, RELATIVE_GAIN · cost(1))`` — ``S`` the song's seconds, ``v`` the features' noise
variance per second (each component's, from the median absolute difference of consecutive seconds, summed), so
a boundary must be statistically clear (twice the BIC of a mean shift in every component), and it must explain
at least ``RELATIVE_GAIN`` of the song's whole variation, so it is musically clear too (in music the variation
within a part is not white noise, and the second bound is the one that decides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audiomemory.orchestrator.timebins import Bins, Span
from audiomemory.runtime.config import MAX_SONG_SECONDS
from audiomemory.runtime.errors import InvalidInput

DEFAULT_MIN_SECTION_SECONDS = 8
DEFAULT_MAX_SECTIONS = 8
MAX_SECTIONS = 16  # the orchestrator's limit: every section is an image painted
COMPONENTS = 16
RELATIVE_GAIN = 0.05
_OVERSAMPLE = 10  # extra directions the randomized range finder probes
_MAD_TO_STD = 1.0 / 0.6744897501960817  # the median absolute deviation of a normal variable, to its std
_MAD_TO_SIGMA = _MAD_TO_STD / math.sqrt(2.0)  # consecutive differences of white noise
_CLIP = 3.0  # standardised values beyond this are clipped: no single second outweighs a part


@dataclass(frozen=True)
class SectionAsk:
    """How to cut a song: exactly ``count`` sections (0 = as many as it has, at most ``max_sections``), each at
    least ``min_seconds`` long."""

    count: int = 0
    min_seconds: int = DEFAULT_MIN_SECTION_SECONDS
    max_sections: int = DEFAULT_MAX_SECTIONS


def section_ask(sections: int, min_seconds: int, max_sections: int, *,
                default_min: int = DEFAULT_MIN_SECTION_SECONDS, default_max: int = DEFAULT_MAX_SECTIONS) -> SectionAsk:
    """A request's settings (0 = the default) checked: ``max_sections`` 2..``MAX_SECTIONS``, ``sections`` 0 or
    2..max, ``min_seconds`` 1..the longest song."""
    top = max_sections or default_max
    if not 2 <= top <= MAX_SECTIONS:
        raise InvalidInput(f"options.max_sections: 2..{MAX_SECTIONS} (0 = the orchestrator's default, {default_max}), "
                           f"got {max_sections}")
    if sections and not 2 <= sections <= top:
        raise InvalidInput(f"options.sections: 0 (as many as the song has) or 2..{top} (max_sections), got {sections}")
    shortest = min_seconds or default_min
    if not 1 <= shortest <= MAX_SONG_SECONDS:
        raise InvalidInput(f"options.min_section_seconds: 1..{MAX_SONG_SECONDS:g} (0 = the orchestrator's default, "
                           f"{default_min}), got {min_seconds}")
    return SectionAsk(int(sections), int(shortest), int(top))


def features(bins: Bins, components: int = COMPONENTS) -> np.ndarray:
    """``[seconds, ≤ components]`` float64: the standardised per-second means' principal component scores."""
    x = bins.means(inner=True)
    x = x - np.median(x, axis=0)
    spread = np.median(np.abs(x), axis=0) * _MAD_TO_STD
    std = x.std(axis=0)
    spread = np.where(spread > 0, spread, std)  # a dimension constant for most of the song: its std
    keep = spread > 1e-9 * max(float(spread.max()), 1e-30)
    x = np.clip(x[:, keep] / spread[keep], -_CLIP, _CLIP)
    if x.shape[1] == 0:
        return np.zeros((x.shape[0], 1))
    return _principal_scores(x - x.mean(axis=0), components)


def _principal_scores(x: np.ndarray, components: int) -> np.ndarray:
    """The rows' scores on their top principal components: exact (an SVD) for a small matrix, else by the
    randomized range finder with two power iterations (Halko, Martinsson & Tropp 2011; what scikit-learn's
    randomized PCA does), seeded, so the same song always gives the same scores — an exact eigensolver takes
    seconds on a 20-minute song's [1200, 2048] rows, this some tens of milliseconds."""
    wanted = min(components, *x.shape)
    if min(x.shape) <= components + _OVERSAMPLE:
        u, sigma, _ = np.linalg.svd(x, full_matrices=False)
        return np.asarray(u[:, :wanted] * sigma[:wanted], np.float64)
    probe = np.random.default_rng(0).standard_normal((x.shape[1], components + _OVERSAMPLE))
    basis, _ = np.linalg.qr(x @ probe)
    for _ in range(2):
        basis, _ = np.linalg.qr(x @ (x.T @ basis))
    u, sigma, _ = np.linalg.svd(basis.T @ x, full_matrices=False)
    return np.asarray((basis @ u[:, :wanted]) * sigma[:wanted], np.float64)


def find_sections(bins: Bins, ask: SectionAsk = SectionAsk()) -> list[Span]:
    """The song's sections (see the module docstring); INVALID_ARGUMENT when ``ask.count`` sections of
    ``ask.min_seconds`` do not fit in it."""
    import ruptures

    seconds, shortest = bins.seconds, ask.min_seconds
    fits = max(1, seconds // shortest)
    if ask.count > fits:
        raise InvalidInput(f"options.sections: {ask.count} sections of at least {shortest} s (min_section_seconds) "
                           f"need {ask.count * shortest} s; the song has {seconds} s")
    most = ask.count or min(ask.max_sections, fits)
    if most <= 1:
        return [(0, seconds)]
    x = features(bins)
    search = ruptures.KernelCPD(kernel="linear", min_size=shortest, jump=1).fit(x)
    cuts: dict[int, list[int]] = {1: [seconds]}
    for count in ([ask.count] if ask.count else range(2, most + 1)):
        cuts[count] = [int(end) for end in search.predict(n_bkps=count - 1)]
    chosen = ask.count
    if not chosen:
        costs = {count: _cost(x, cut) for count, cut in cuts.items()}
        penalty = max(2.0 * math.log(seconds) * _noise(x), RELATIVE_GAIN * costs[1])
        chosen = min(costs, key=lambda count: costs[count] + penalty * (count - 1))
    ends = cuts[chosen]
    return list(zip([0, *ends[:-1]], ends, strict=True))


def _cost(x: np.ndarray, ends: list[int]) -> float:
    """The L2 cost of cutting ``x`` at ``ends``: each row's squared distance to its section's mean, summed."""
    return float(sum(((part - part.mean(axis=0)) ** 2).sum() for part in np.split(x, ends[:-1])))


def _noise(x: np.ndarray) -> float:
    """The features' noise variance per second: each component's from the median absolute difference of
    consecutive seconds (robust to the few jumps at boundaries; seconds without frames of their own left out),
    summed."""
    steps = np.diff(x, axis=0)
    steps = steps[np.any(steps != 0, axis=1)]  # a second filled from its neighbour (a hop over 1 s) is no step
    if steps.shape[0] < 2:
        return 0.0
    sigma = np.median(np.abs(steps), axis=0) * _MAD_TO_SIGMA
    return float((sigma**2).sum())
