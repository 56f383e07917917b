"""The content-addressed audio cache: hits, misses, LRU eviction, corruption never served, and an entry someone
planted never runs code, takes much memory or leads out of the folder."""

from __future__ import annotations

import hashlib
import io
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from audiomemory.orchestrator.cache import MAX_ENTRY_BYTES, AudioCache, CachedAudio, cache_key
from audiomemory.orchestrator.timebins import Bins


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
    entry = probe.path(_key(0)).stat().st_size
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
    assert sum(p.stat().st_size for p in cache.root.glob("*/*.amc")) <= cache.max_bytes


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


def _plant(cache: AudioCache, key: str, payload: bytes) -> Path:
    """An entry someone who can write the cache folder left there, with a checksum that matches."""
    path = cache.path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hashlib.sha256(payload).digest() + payload)
    return path


def _npz(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _npy(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def _header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue()


class _Payload:
    marker: Path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "ran"))


def test_a_hostile_entry_is_a_miss_that_runs_nothing_and_allocates_little(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "cache")
    payload = _Payload()
    payload.marker = tmp_path / "payload-ran"
    pickled = np.empty(1, dtype=object)
    pickled[0] = payload
    bomb = _npy(np.zeros(16 << 20, np.float32))  # 64 MB that deflate to ~64 KB
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    entries = {
        "pickle": _npz({"pooled.npy": _npy(pickled, allow_pickle=True)}),
        "deflate-bomb": _npz({"pooled.npy": bomb}, zipfile.ZIP_DEFLATED),
        "deep-transcript": _npz({"transcript.npy": _npy(np.frombuffer(deep, np.uint8))}),
        "odd-transcript": _npz({"transcript.npy": _npy(np.frombuffer(b'{"segments": 5}', np.uint8))}),
        "int-vector": _npz({"pooled.npy": _npy(np.arange(64))}),
        "header-promises-4-TB": _npz({"pooled.npy": _header((1 << 40,)) + bytes(256)}),
        "not-an-npz": _npy(np.zeros(64, np.float32)),
    }
    for n, (name, data) in enumerate(entries.items()):
        key = _key(100 + n)
        path = _plant(cache, key, data)
        assert cache.get(key) is None, name
        assert not path.exists(), name  # removed, as any corrupt entry
    assert not payload.marker.exists()
    assert cache.stats.corrupt == len(entries)


def test_an_entry_that_is_a_link_is_not_followed_out_of_the_cache(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "cache")
    elsewhere = AudioCache(tmp_path / "elsewhere")
    elsewhere.put(_key(7), _value(7))  # a well-formed entry outside the cache folder
    link = cache.path(_key(7))
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere.path(_key(7)))
    assert cache.get(_key(7)) is None
    assert elsewhere.path(_key(7)).exists()  # the file it pointed at is left alone


def _bins(seed: int, seconds: int = 5, dim: int = 8) -> Bins:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 4, (4, seconds)).astype(np.int32)
    sums = rng.standard_normal((4, seconds, dim)).astype(np.float32)
    return Bins(counts, sums, np.abs(sums))


def test_an_entry_keeps_the_bins_and_one_written_before_them_still_reads_without(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path)
    bins = _bins(0)
    cache.put(_key(1), CachedAudio(np.arange(64, dtype=np.float32), bins))
    got = cache.get(_key(1))
    assert isinstance(got, CachedAudio) and got.bins is not None
    for name in ("counts", "sums", "m2"):
        np.testing.assert_array_equal(getattr(got.bins, name), getattr(bins, name))
        assert getattr(got.bins, name).dtype == getattr(bins, name).dtype
    np.testing.assert_allclose(got.bins.pooled((1, 4)), bins.pooled((1, 4)))
    _plant(cache, _key(2), _npz({"pooled.npy": _npy(np.ones(64, np.float32))}))  # as entries were written before
    old = cache.get(_key(2))
    assert isinstance(old, CachedAudio) and old.bins is None and old.pooled.shape == (64,)


def test_a_twenty_minute_songs_bins_fit_an_entry_and_a_longer_ones_are_not_written(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path)
    counts = np.ones((4, 1200), np.int32)
    sums = np.zeros((4, 1200, 512), np.float32)
    assert cache.put(_key(3), CachedAudio(np.zeros(4096, np.float32), Bins(counts, sums, sums)))
    assert cache.path(_key(3)).stat().st_size < MAX_ENTRY_BYTES * 0.7  # ~20 MB: room to spare
    got = cache.get(_key(3))
    assert isinstance(got, CachedAudio) and got.bins is not None and got.bins.seconds == 1200
    longer = np.zeros((4, 2200, 512), np.float32)  # 36 minutes: over the entry limit
    assert not cache.put(_key(4), CachedAudio(np.zeros(4096, np.float32), Bins(np.ones((4, 2200), np.int32),
                                                                                 longer, longer)))
    assert not cache.path(_key(4)).exists()


def test_bins_that_do_not_fit_together_or_their_vector_are_a_miss(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "cache")
    pooled, counts = _npy(np.zeros(64, np.float32)), _npy(np.ones((4, 5), np.int32))
    sums = _npy(np.zeros((4, 5, 8), np.float32))
    short = _npy(np.zeros((4, 4, 8), np.float32))
    entries = {
        "wide-counts": {"bin_counts.npy": _npy(np.ones((4, 5), np.int64)), "bin_sums.npy": sums, "bin_m2.npy": sums},
        "short-m2": {"bin_counts.npy": counts, "bin_sums.npy": sums, "bin_m2.npy": short},
        "negative-count": {"bin_counts.npy": _npy(-np.ones((4, 5), np.int32)), "bin_sums.npy": sums,
                           "bin_m2.npy": sums},
        "nan-sum": {"bin_counts.npy": counts, "bin_sums.npy": _npy(np.full((4, 5, 8), np.nan, np.float32)),
                    "bin_m2.npy": sums},
        "two-thirds": {"bin_counts.npy": counts, "bin_sums.npy": sums},
        "an-extra": {"bin_counts.npy": counts, "bin_sums.npy": sums, "bin_m2.npy": sums, "more.npy": counts},
        "fortran": {"bin_counts.npy": counts, "bin_sums.npy": _npy(np.asfortranarray(np.zeros((4, 5, 8), np.float32))),
                    "bin_m2.npy": sums},
    }
    for n, (name, members) in enumerate(entries.items()):
        key = _key(200 + n)
        path = _plant(cache, key, _npz({"pooled.npy": pooled, **members}))
        assert cache.get(key) is None, name
        assert not path.exists(), name
    vector = _npy(np.zeros(63, np.float32))  # not 2 · 4 stems · 8 dimensions
    _plant(cache, _key(300), _npz({"pooled.npy": vector, "bin_counts.npy": counts, "bin_sums.npy": sums,
                                   "bin_m2.npy": sums}))
    assert cache.get(_key(300)) is None
    _plant(cache, _key(301), _npz({"pooled.npy": pooled, "bin_counts.npy": counts, "bin_sums.npy": sums,
                                   "bin_m2.npy": sums}))
    assert isinstance(cache.get(_key(301)), CachedAudio)  # the same members, well formed: served
