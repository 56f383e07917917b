"""Pooling frames as they stream in gives the pool step's numbers (mean, population std per stem)."""

from __future__ import annotations

import numpy as np
import pytest

from audiomemory.orchestrator.pooling import STEM_ORDER, StemPool, pool_stems
from audiomemory.runtime.errors import FailedPrecondition, InvalidInput


def test_batches_in_any_split_and_interleaving_pool_to_the_two_pass_mean_and_std() -> None:
    rng = np.random.default_rng(0)
    frames = {name: (rng.standard_normal((97 + 13 * i, 16)) * (i + 1) + 5).astype(np.float32)
              for i, name in enumerate(STEM_ORDER)}
    pool = StemPool()
    cursors = dict.fromkeys(STEM_ORDER, 0)
    while any(cursors[n] < len(frames[n]) for n in STEM_ORDER):  # stems interleaved, uneven batches
        for i, name in enumerate(STEM_ORDER):
            step = int(rng.integers(1, 9))
            part = frames[name][cursors[name] : cursors[name] + step]
            if len(part):
                pool.add(i, part)
                cursors[name] += len(part)
    expected = np.concatenate(
        [np.concatenate([f.astype(np.float64).mean(0), f.astype(np.float64).std(0)]) for f in frames.values()]
    ).astype(np.float32)
    np.testing.assert_allclose(pool.result(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pool_stems(frames), expected, rtol=1e-6, atol=1e-6)


def test_a_stem_without_frames_or_a_changing_dim_is_refused() -> None:
    pool = StemPool()
    pool.add(0, np.ones((3, 4), np.float32))
    with pytest.raises(InvalidInput, match="embedding dim 5 differs from 4"):
        pool.add(1, np.ones((3, 5), np.float32))
    with pytest.raises(FailedPrecondition, match=r"none for \['drums', 'bass', 'other'\]"):
        pool.result()
