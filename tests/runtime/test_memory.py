"""Song-sized arrays: zero-filled, writable, and their memory back to the OS once they are freed."""

from __future__ import annotations

import gc
import re
from pathlib import Path

import numpy as np

from audiomemory.runtime.memory import MIN_BYTES, song_array


def rss_mb() -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024  # type: ignore[union-attr]


def test_a_big_array_is_committed_as_written_and_returned_when_freed() -> None:
    before = rss_mb()
    song = song_array((2, 50_000_000))  # 400 MB reserved
    assert song.shape == (2, 50_000_000) and song.dtype == np.float32 and song.flags.writeable
    assert not song[:, ::1_000_000].any()
    assert rss_mb() - before < 50, "an unwritten reservation must not be resident"
    song[:, :10_000_000] = 1.0  # 80 MB written
    assert 60 < rss_mb() - before < 140
    view = song[:, :5]
    del song
    gc.collect()
    assert view.sum() == 10.0  # a view keeps the pages
    del view
    gc.collect()
    assert rss_mb() - before < 30, "freed pages must go back to the OS"


def test_a_small_array_comes_from_the_heap_as_usual() -> None:
    small = song_array((2, 1000))
    assert small.shape == (2, 1000) and not small.any() and small.base is None and small.nbytes < MIN_BYTES
