"""The content-addressed audio cache: hits, misses, LRU eviction, corruption never served."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from audiomemory.orchestrator.cache import AudioCache, CachedAudio, cache_key


def _value(seed: int) -> CachedAudio:
    return CachedAudio(pooled=np.random.default_rng(seed).standard_normal(64).astype(np.float32))


def _key(n: int) -> str:
    return cache_key(f"{n:064x}", separator={"model": "tiny"}, encoder={"model": "tiny"})


def test_put_then_get_returns_the_same_arrays(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path)
    value = _value(0)
    assert cache.get(_key(1)) is None
    assert cache.put(_key(1), value)
    got = cache.get(_key(1))
    assert got is not None
    np.testing.assert_array_equal(got.pooled, value.pooled)
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


def test_key_depends_on_audio_models_and_parameters() -> None:
    base = cache_key("a" * 64, separator={"model": "x"}, encoder={"model": "y"}, rate=48000)
    assert base == cache_key("a" * 64, encoder={"model": "y"}, rate=48000, separator={"model": "x"})
    assert base != cache_key("b" * 64, separator={"model": "x"}, encoder={"model": "y"}, rate=48000)
    assert base != cache_key("a" * 64, separator={"model": "z"}, encoder={"model": "y"}, rate=48000)
    assert base != cache_key("a" * 64, separator={"model": "x"}, encoder={"model": "y"}, rate=44100)


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupt_or_partial_entries_are_recomputed_never_served(tmp_path: Path, damage: str) -> None:
    cache = AudioCache(tmp_path)
    cache.put(_key(2), _value(2))
    path = cache.path(_key(2))
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0x01
    elif damage == "truncate":
        blob = blob[: len(blob) - 100]
    else:
        blob = bytearray()
    path.write_bytes(bytes(blob))
    assert cache.get(_key(2)) is None
    assert cache.stats.corrupt == 1
    assert not path.exists()
    cache.put(_key(2), _value(2))  # recomputed and stored again
    assert cache.get(_key(2)) is not None


def test_least_recently_used_entries_are_evicted_past_the_size_cap(tmp_path: Path) -> None:
    probe = AudioCache(tmp_path / "probe")
    probe.put(_key(0), _value(0))
    entry = probe.size_bytes()
    cache = AudioCache(tmp_path / "c", max_bytes=int(entry * 3.5))
    now = time.time()
    for n in range(3):
        cache.put(_key(n), _value(n))
        os.utime(cache.path(_key(n)), (now - 100 + n, now - 100 + n))
    assert cache.get(_key(0)) is not None  # key 0 becomes the most recently used
    cache.put(_key(3), _value(3))
    assert cache.get(_key(1)) is None  # the oldest untouched one went
    for n in (0, 2, 3):
        assert cache.path(_key(n)).exists()
    assert cache.size_bytes() <= cache.max_bytes


def test_an_unwritable_folder_degrades_to_no_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = AudioCache(blocker / "cache")
    assert cache.put(_key(5), _value(5)) is False
    assert cache.get(_key(5)) is None
    assert cache.stats.write_errors == 1


def test_zero_size_cap_disables_the_cache(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path, max_bytes=0)
    assert not cache.put(_key(1), _value(1))
    assert cache.get(_key(1)) is None
    assert not any(tmp_path.iterdir())
