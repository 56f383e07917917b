"""One-second bins of the frame embeddings: any span's pooled vector is the pool step over that span's frames."""

from __future__ import annotations

import numpy as np
import pytest

from audiomemory.orchestrator.pooling import STEM_ORDER, StemPool
from audiomemory.orchestrator.timebins import BinPool, Bins, bin_count
from audiomemory.runtime.errors import FailedPrecondition, InvalidInput

RATE = 48_000


def _frames(rng: np.random.Generator, count: int, dim: int, offset: float = 5.0, scale: float = 1.0
            ) -> dict[str, np.ndarray]:
    return {name: (rng.standard_normal((count + 3 * i, dim)) * scale * (i + 1) + offset).astype(np.float32)
            for i, name in enumerate(STEM_ORDER)}


def _stream(frames: dict[str, np.ndarray], seconds: int, hop: int, rng: np.random.Generator
            ) -> tuple[Bins, np.ndarray]:
    """The frames fed to a ``BinPool`` (and a ``StemPool``) stems interleaved, in uneven batches."""
    dim = next(iter(frames.values())).shape[1]
    bins, pool = BinPool(seconds, hop, RATE, dim), StemPool()
    cursors = dict.fromkeys(STEM_ORDER, 0)
    while any(cursors[n] < len(frames[n]) for n in STEM_ORDER):
        for i, name in enumerate(STEM_ORDER):
            part = frames[name][cursors[name]: cursors[name] + int(rng.integers(1, 12))]
            if len(part):
                bins.add(i, part)
                pool.add(i, part)
                cursors[name] += len(part)
    return bins.result(), pool.result()


def _two_pass(frames: dict[str, np.ndarray], hop: int, seconds: int, span: tuple[int, int]) -> np.ndarray:
    """The pool step over the frames centred in the span's seconds (the last second takes those past the end)."""
    parts = []
    for f in frames.values():
        where = np.minimum(np.arange(len(f)) * hop // RATE, seconds - 1)
        x = f[(where >= span[0]) & (where < span[1])].astype(np.float64)
        parts += [x.mean(0), x.std(0)]
    return np.concatenate(parts).astype(np.float32)


def test_any_span_pools_to_the_two_pass_mean_and_std_of_its_frames() -> None:
    rng = np.random.default_rng(0)
    hop, seconds = 4800, 7  # 0.1 s: ten frames a second; 70-79 frames, the last few past the end
    frames = _frames(rng, 70, 16)
    bins, whole = _stream(frames, seconds, hop, rng)
    assert bins.seconds == seconds and bins.counts.dtype == np.int32 and bins.sums.dtype == np.float32
    np.testing.assert_array_equal(bins.counts[0], [10, 10, 10, 10, 10, 10, 10])
    np.testing.assert_array_equal(bins.counts[3], [10, 10, 10, 10, 10, 10, 19])  # 79 frames: 9 past the end
    for span in [(0, seconds), (0, 1), (2, 5), (6, 7), (3, 4)]:
        np.testing.assert_allclose(bins.pooled(span), _two_pass(frames, hop, seconds, span), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bins.pooled(), whole, rtol=1e-5, atol=1e-5)  # the whole song: StemPool's a
    assert bins.pooled((2, 5)).shape == whole.shape == (4 * 2 * 16,)


def test_a_span_std_is_exact_where_raw_sums_of_squares_would_cancel() -> None:
    # frames around 100 with a spread of 0.01: E[x²] − E[x]² from float32 sums would lose every digit of it
    rng = np.random.default_rng(1)
    frames = _frames(rng, 40, 8, offset=100.0, scale=1e-2)
    bins, _ = _stream(frames, 4, 12_000, rng)  # 0.25 s: four frames a second
    got = bins.pooled((0, 3)).reshape(4, 2, 8)[:, 1]
    want = _two_pass(frames, 12_000, 4, (0, 3)).reshape(4, 2, 8)[:, 1]
    np.testing.assert_allclose(got, want, rtol=1e-3)


def test_a_hop_over_a_second_leaves_empty_bins_filled_for_sections_and_refused_for_a_span() -> None:
    rng = np.random.default_rng(2)
    frames = {name: rng.standard_normal((4, 3)).astype(np.float32) for name in STEM_ORDER}
    bins, _ = _stream(frames, 9, 3 * RATE, rng)  # a frame every 3 s: bins 0, 3, 6 (and 9 → the last, 8)
    np.testing.assert_array_equal(bins.counts[0], [1, 0, 0, 1, 0, 0, 1, 0, 1])
    means = bins.means()
    assert means.shape == (9, 4 * 3)
    vocals = means[:, :3]  # an empty second takes the nearest filled one's (the earlier of two as near)
    for second, frame in enumerate([0, 0, 1, 1, 1, 2, 2, 2, 3]):
        np.testing.assert_allclose(vocals[second], frames["vocals"][frame], rtol=1e-6)
    with pytest.raises(FailedPrecondition, match=r"span \[1, 3\) s holds no frame of the vocals stem"):
        bins.pooled((1, 3))
    np.testing.assert_allclose(bins.pooled((1, 4))[:3], frames["vocals"][1], rtol=1e-6)


@pytest.mark.parametrize("span", [(-1, 3), (3, 3), (4, 2), (0, 9)])
def test_a_span_outside_the_song_is_refused_naming_the_field_the_limit_and_what_came(span: tuple[int, int]) -> None:
    bins, _ = _stream(_frames(np.random.default_rng(3), 20, 4), 8, RATE // 2, np.random.default_rng(3))
    with pytest.raises(InvalidInput) as refused:
        bins.pooled(span)
    assert str(refused.value) == (f"options.span: whole seconds [start_s, end_s) with 0 <= start_s < end_s <= 8 "
                                  f"(the song's length rounded up), got [{span[0]}, {span[1]})")


def test_bins_count_the_seconds_rounded_up_and_refuse_inconsistent_arrays() -> None:
    assert [bin_count(s) for s in (0.2, 1.0, 1.001, 59.5, 60.0)] == [1, 1, 2, 60, 60]
    counts, sums = np.ones((4, 3), np.int32), np.zeros((4, 3, 2), np.float32)
    with pytest.raises(FailedPrecondition, match="shapes"):
        Bins(counts, sums, np.zeros((4, 2, 2), np.float32))
    with pytest.raises(FailedPrecondition, match="dtypes"):
        Bins(counts.astype(np.int64), sums, sums)
    with pytest.raises(FailedPrecondition, match="negative"):
        Bins(-counts, sums, sums)
    with pytest.raises(InvalidInput, match=r"must be \[n, 2\]"):
        BinPool(3, RATE, RATE, 2).add(0, np.zeros((2, 3), np.float32))
